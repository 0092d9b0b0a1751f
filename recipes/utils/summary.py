"""Print what a recipe produced: stages run, where the outputs are, the key metrics."""

import json
import sys
from pathlib import Path

exp = Path(sys.argv[1])
print(f"\n== summary of {exp}")
for marker in sorted((exp / ".stages").glob("*"), key=lambda p: int(p.name)):
    print(f"stage {marker.name}: done ({marker.read_text().strip()})")
for name, what in (("checkpoints/last.pt", "checkpoint"), ("tb", "TensorBoard logs (tensorboard --logdir)"),
                   ("codes", "codes"), ("convert", "converted audio"), ("metrics.json", "metrics")):
    if (exp / name).exists():
        print(f"{what:42s} {exp / name}")
if (exp / "convert").is_dir():
    print(f"{'converted wavs':42s} {sum(1 for _ in (exp / 'convert').rglob('*.wav'))}")
for name in ("train_summary.json", "metrics.json"):
    if (exp / name).is_file():
        metrics = json.loads((exp / name).read_text())
        shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in metrics.items()
                 if isinstance(v, (int, float))}
        print(f"{name:42s} {json.dumps(shown)}")
