"""Print what a recipe produced: stages run, where the outputs are, the key metrics.

    python3 recipes/utils/summary.py EXP_DIR [DATA_DIR]
"""

import json
import sys
from pathlib import Path


def numbers(record: dict) -> dict:
    """The numeric entries of a JSON record, floats rounded for reading."""
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


exp = Path(sys.argv[1])
data = Path(sys.argv[2]) if len(sys.argv) > 2 else None
print(f"\n== summary of {exp}")
for marker in sorted((exp / ".stages").glob("*"), key=lambda p: int(p.name)):
    seconds, _, name = marker.read_text().strip().split("\n")[0].partition("\t")  # then its settings
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
if (exp / "convert").is_dir():
    print(f"{'converted wavs':42s} {sum(1 for _ in (exp / 'convert').rglob('*.wav'))}")
if (exp / "prior_samples").is_dir():
    print(f"{'prior samples (wav)':42s} {sum(1 for _ in (exp / 'prior_samples').rglob('*.wav'))}")

records = [exp / "train_summary.json", exp / "prior/train_summary.json", exp / "metrics.json"]
if data is not None:
    records += [data / "align/align.json", data / "align/agreement.json"]
for path in records:
    if path.is_file():
        record = json.loads(path.read_text())
        record = record.get("summary", record)
        print(f"{path.parent.name + '/' + path.name:42s} {json.dumps(numbers(record))}")
for path in sorted((exp / "prior_samples").glob("*/samples.json")):
    record = json.loads(path.read_text())
    print(f"{'prior samples of ' + record['speaker']:42s} bits/code under the prior "
          f"{record['kept_bits_per_code']}, codes used {record['samples_codes_used']} "
          f"(data {record['data_codes_used']})")
if (exp / "probe/table.md").is_file():
    print("\nphoneme probe (" + str(exp / "probe/table.md") + "):\n" + (exp / "probe/table.md").read_text())
if (exp / "eval_convert/metrics.json").is_file():
    summary = json.loads((exp / "eval_convert/metrics.json").read_text())["summary"]
    similarity = summary.get("speaker_similarity", {}).get("conversion", {})
    errors = summary.get("recognition", {}).get("error_rate", {})
    print(f"{'conversion':42s} similarity to target {similarity.get('target')}, to source "
          f"{similarity.get('source')}; closer to target {summary.get('conversion_speaker_accuracy')}; "
          f"recognition error {errors}; MCD {summary.get('mcd', {}).get('reconstruction')}")
