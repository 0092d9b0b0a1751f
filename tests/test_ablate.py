"""tools/ablate.py: every variant trained, evaluated and put in one table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import FAST_TRAIN

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))


@pytest.mark.slow
def test_ablation_table_for_two_variants(demo_manifest, tmp_path, capsys):
    import ablate

    out = tmp_path / "ablation"
    args = ["--manifest", demo_manifest, "--out_dir", out, "--variants", "baseline,groups-2", "--model", "tiny",
            "--minutes", "0", "--max_steps", "3", "--num_eval", "1", "--probe_split", "",
            "--", *[o for o in FAST_TRAIN if not o.startswith("model=")]]
    assert ablate.main([str(a) for a in args]) == 0
    rows = json.loads((out / "ablation.json").read_text())
    assert [r["variant"] for r in rows] == ["baseline", "groups-2", "mfcc-kmeans-100hz"]
    assert rows[2]["accuracy"] is not None and rows[2]["code_rate_hz"] == 100
    rows = rows[:2]
    for row in rows:
        assert row["steps"] == 3 and 0 <= row["accuracy"] <= 1 and row["decode_samples_per_s"] > 0
        assert row["decode_generator"] == "C kernel"  # the speed says what measured it
        assert row["mcd"] > 0 and row["closer_to_target"] in (0.0, 1.0, None)
    printed = capsys.readouterr().out
    assert "| baseline |" in printed and "| groups-2 |" in printed
    assert (out / "table.md").read_text() in printed
    # other variants later: their rows join the table, the earlier rows stay (VARIANTS order); a
    # two-stage variant trains its units, then its decoder on them; a new code rate gets its baseline
    again = [a if a != "baseline,groups-2" else "hierarchical,mel-invariant-50hz" for a in args]
    assert ablate.main([str(a) for a in again]) == 0
    rows = json.loads((out / "ablation.json").read_text())
    assert [r["variant"] for r in rows] == ["baseline", "groups-2", "hierarchical", "mel-invariant-50hz",
                                           "mfcc-kmeans-100hz", "mfcc-kmeans-50hz"]
    assert rows[2]["steps"] == 3 and rows[2]["decode_samples_per_s"] > 0
    assert (out / "hierarchical" / "codes" / "codes_top").is_dir()
    assert rows[3]["steps"] == 6 and rows[3]["code_rate_hz"] == 50 and rows[3]["decode_samples_per_s"] > 0
    assert (out / "mel-invariant-50hz" / "units" / "checkpoints" / "last.pt").is_file()
    assert ablate.main(["--manifest", str(demo_manifest), "--out_dir", str(out), "--variants", "nope"]) == 2
