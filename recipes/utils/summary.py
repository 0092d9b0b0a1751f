"""Print what a recipe produced: stages run, where the outputs are, the key metrics.

    python3 recipes/utils/summary.py EXP_DIR [DATA_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def numbers(record: dict) -> dict:
    """The numeric entries of a JSON record, floats rounded for reading."""
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def read_record(path: Path) -> dict | None:
    """A JSON object from ``path``, or None after printing why it cannot be shown (a file damaged
    or edited by hand must not end the summary of a run whose work succeeded)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        print(f"{path.parent.name + '/' + path.name:42s} (cannot be read: {str(exc)[:60]})")
        return None
    if not isinstance(record, dict):
        print(f"{path.parent.name + '/' + path.name:42s} (not a JSON object)")
        return None
    return record


def section(record: dict, *keys: str) -> dict:
    """``record[k1][k2]...``, or {} where a level is missing or not an object."""
    for key in keys:
        record = record.get(key) if isinstance(record, dict) else None
    return record if isinstance(record, dict) else {}


def marker_settings(marker: Path) -> dict[str, str]:
    """The ``name=value`` settings a stage marker records after its first line."""
    lines = marker.read_text(errors="replace").splitlines()[1:]
    return dict(line.split("=", 1) for line in lines if "=" in line)


exp = Path(sys.argv[1])
data = Path(sys.argv[2]) if len(sys.argv) > 2 else None
print(f"\n== summary of {exp}")
markers = [p for p in (exp / ".stages").glob("*") if p.name.isdigit() and p.is_file()]  # not an editor's backup
for marker in sorted(markers, key=lambda p: int(p.name)):
    seconds, _, name = (marker.read_text(errors="replace").strip().split("\n") or [""])[0].partition("\t")
    print(f"stage {marker.name}: {name or 'done'} ({seconds})")

outputs = [(exp / "checkpoints/last.pt", "checkpoint"),
           (exp / "tb", "TensorBoard logs (tensorboard --logdir)"),
           (exp / "codes", "codes"), (exp / "convert", "converted audio"),
           (exp / "prior/checkpoints/last.pt", "prior"), (exp / "prior_samples", "prior samples"),
           (exp / "metrics.json", "metrics"), (exp / "probe", "phoneme probe (JSON, PNG)"),
           (exp / "eval_convert/metrics.json", "conversion metrics"), (exp / "report.html", "report")]
if data is not None:
    outputs[:0] = [(data / "prepared/manifest.jsonl", "manifest"), (data / "align", "phone alignments")]
for path, what in outputs:
    if path.exists():
        print(f"{what:42s} {path}")
converted = exp / ".stages" / "4"
targets = marker_settings(converted).get("targets", "") if converted.is_file() else ""
if (exp / "convert").is_dir():  # of the targets stage 4 converted to, when its marker says
    folders = [exp / "convert" / t for t in targets.split(",") if t] or [exp / "convert"]
    print(f"{'converted wavs':42s} {sum(1 for f in folders if f.is_dir() for _ in f.rglob('*.wav'))}")
if (exp / "prior_samples").is_dir():
    print(f"{'prior samples (wav)':42s} {sum(1 for _ in (exp / 'prior_samples').rglob('*.wav'))}")

records = [exp / "train_summary.json", exp / "prior/train_summary.json", exp / "metrics.json"]
if data is not None:
    records += [data / "align/align.json", data / "align/agreement.json"]
for path in records:
    record = read_record(path) if path.is_file() else None
    if record is not None:
        record = section(record, "summary") or record
        print(f"{path.parent.name + '/' + path.name:42s} {json.dumps(numbers(record))}")
for path in sorted((exp / "prior_samples").glob("*/samples.json")):
    record = read_record(path)
    if record is not None:
        print(f"{'prior samples of ' + str(record.get('speaker', path.parent.name)):42s} bits/code under the prior "
              f"{record.get('kept_bits_per_code')}, codes used {record.get('samples_codes_used')} "
              f"(data {record.get('data_codes_used')})")
if (exp / "probe/table.md").is_file():
    table = (exp / "probe/table.md").read_text(errors="replace")
    print("\nphoneme probe (" + str(exp / "probe/table.md") + "):\n" + table)
record = read_record(exp / "eval_convert/metrics.json") if (exp / "eval_convert/metrics.json").is_file() else None
if record is not None:
    summary = section(record, "summary")
    similarity = section(summary, "speaker_similarity", "conversion")
    errors = section(summary, "recognition").get("error_rate")
    print(f"{'conversion':42s} similarity to target {similarity.get('target')}, to source "
          f"{similarity.get('source')}; closer to target {summary.get('conversion_speaker_accuracy')}; "
          f"recognition error {errors}; MCD {section(summary, 'mcd').get('reconstruction')}")
