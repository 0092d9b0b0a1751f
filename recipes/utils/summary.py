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


STAGE_OF = {  # output -> the stage that writes it (recipes/utils/stage.sh numbers them for every recipe)
    "manifest": 1, "checkpoint": 2, "tb": 2, "train_summary.json": 2, "codes": 3, "convert": 4, "align": 5,
    "prior": 6, "prior_samples": 7, "metrics.json": 8, "probe": 8, "eval_convert": 8, "report": 9,
}


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print("usage: python3 recipes/utils/summary.py EXP_DIR [DATA_DIR]", file=sys.stderr)
        return 2
    exp = Path(argv[0])
    data = Path(argv[1]) if len(argv) > 1 else None
    print(f"\n== summary of {exp}")
    if not exp.is_dir():  # a run that stopped before training (--stop_stage 1), or a mistyped folder
        print(f"{exp} is no experiment folder yet: no stage after the data has run there.")
    stages = exp / ".stages"
    markers = [p for p in stages.glob("*") if p.name.isdigit() and p.is_file()] if stages.is_dir() else []
    done = {int(p.name) for p in markers}  # not an editor's backup
    for marker in sorted(markers, key=lambda p: int(p.name)):
        seconds, _, name = (marker.read_text(errors="replace").strip().split("\n") or [""])[0].partition("\t")
        print(f"stage {marker.name}: {name or 'done'} ({seconds})")

    def earlier(output: str) -> str:
        """A label for what a stage without its marker left (forced again or interrupted since): its
        files are of an earlier run, not of the model and data the finished stages describe."""
        stage = STAGE_OF[output]
        return "" if stage in done else f"  [from an earlier run: stage {stage} is not done]"

    outputs = [(exp / "checkpoints/last.pt", "checkpoint", "checkpoint"),
               (exp / "tb", "TensorBoard logs (tensorboard --logdir)", "tb"),
               (exp / "codes", "codes", "codes"), (exp / "convert", "converted audio", "convert"),
               (exp / "prior/checkpoints/last.pt", "prior", "prior"),
               (exp / "prior_samples", "prior samples", "prior_samples"),
               (exp / "metrics.json", "metrics", "metrics.json"), (exp / "probe", "phoneme probe (JSON, PNG)", "probe"),
               (exp / "eval_convert/metrics.json", "conversion metrics", "eval_convert"),
               (exp / "report.html", "report", "report")]
    if data is not None:
        outputs[:0] = [(data / "prepared/manifest.jsonl", "manifest", "manifest"),
                       (data / "align", "phone alignments", "align")]
    for path, what, output in outputs:
        if path.exists():
            print(f"{what:42s} {path}{earlier(output)}")

    def targets_of(stage: int) -> list[str] | None:
        """The targets stage ``stage``'s marker records (4: conversions, 7: prior samples), or None."""
        marker = stages / str(stage)
        return [t for t in marker_settings(marker).get("targets", "").split(",") if t] if marker.is_file() else None

    converted = targets_of(4)
    if (exp / "convert").is_dir():  # of the targets stage 4 converted to, when its marker says
        folders = [exp / "convert" / t for t in converted or []] or [exp / "convert"]
        count = sum(1 for f in folders if f.is_dir() for _ in f.rglob("*.wav"))
        print(f"{'converted wavs':42s} {count}{earlier('convert')}")
    sampled = targets_of(7)
    sample_files = sorted((exp / "prior_samples").glob("*/samples.json"))
    if sampled:  # of the targets stage 7 sampled for; another run's speakers are not this run's
        sample_files = [p for p in sample_files if p.parent.name in sampled]
    if (exp / "prior_samples").is_dir():
        count = sum(1 for p in sample_files for _ in p.parent.glob("*.wav"))
        print(f"{'prior samples (wav)':42s} {count}{earlier('prior_samples')}")

    records = [(exp / "train_summary.json", "train_summary.json"), (exp / "prior/train_summary.json", "prior"),
               (exp / "metrics.json", "metrics.json")]
    if data is not None:
        records += [(data / "align/align.json", "align"), (data / "align/agreement.json", "align")]
    for path, output in records:
        record = read_record(path) if path.is_file() else None
        if record is not None:
            record = section(record, "summary") or record
            print(f"{path.parent.name + '/' + path.name:42s} {json.dumps(numbers(record))}{earlier(output)}")
    for path in sample_files:
        record = read_record(path)
        if record is not None:
            print(f"{'prior samples of ' + str(record.get('speaker', path.parent.name)):42s} bits/code under the "
                  f"prior {record.get('kept_bits_per_code')}, codes used {record.get('samples_codes_used')} "
                  f"(data {record.get('data_codes_used')}){earlier('prior_samples')}")
    if (exp / "probe/table.md").is_file():
        table = (exp / "probe/table.md").read_text(errors="replace")
        print("\nphoneme probe (" + str(exp / "probe/table.md") + f"){earlier('probe')}:\n" + table)
    path = exp / "eval_convert/metrics.json"
    record = read_record(path) if path.is_file() else None
    if record is not None:
        summary = section(record, "summary")
        similarity = section(summary, "speaker_similarity", "conversion")
        errors = section(summary, "recognition").get("error_rate")
        print(f"{'conversion':42s} similarity to target {similarity.get('target')}, to source "
              f"{similarity.get('source')}; closer to target {summary.get('conversion_speaker_accuracy')}; "
              f"recognition error {errors}; MCD {section(summary, 'mcd').get('reconstruction')}"
              f"{earlier('eval_convert')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
