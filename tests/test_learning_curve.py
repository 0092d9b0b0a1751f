"""tools/learning_curve.py: one run per configuration, scored at several budgets, one table and one PNG."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

SHRINK = [  # the recipe-sized models cut down to seconds of CPU
    "device=cpu", "train.batch_size=2", "train.crop_seconds=0.25", "train.media_every=0", "train.log_every=1",
    "train.valid_every=1000", "train.valid_max_utterances=2", "train.warmup_steps=1",
    "model.encoder.channels=16", "model.mel_decoder.channels=16",
    "model.decoder.layers=4", "model.decoder.cycles=1", "model.decoder.residual_channels=8",
    "model.decoder.gate_channels=16", "model.decoder.skip_channels=8", "model.decoder.local_channels=8",
    "model.conv_decoder.channels=16",
]


@pytest.mark.slow
def test_curve_of_two_configurations_at_two_budgets(demo_manifest, tmp_path, capsys):
    import learning_curve

    out = tmp_path / "curve"
    args = ["--manifest", str(demo_manifest), "--out_dir", str(out), "--configs", "recipe,single",
            "--minutes", "0.05,0.1", "--units_minutes", "0.02", "--steps_per_minute", "5000",
            "--num_eval", "2", "--probe_split", "", "--", *SHRINK]
    assert learning_curve.main(args) == 0
    rows = json.loads((out / "curve.json").read_text())
    assert [(r["config"], r["minutes"]) for r in rows] == [
        ("recipe", 0.05), ("recipe", 0.1), ("single", 0.05), ("single", 0.1)]
    for first, second in (rows[:2], rows[2:]):  # the second point resumed the first's run
        assert 0 < first["steps"] < second["steps"] and second["samples"] == second["steps"] * 2 * 2000
        assert first["trained_minutes"] < second["trained_minutes"]
        for row in (first, second):
            assert 0 <= row["accuracy"] <= 1 and row["mcd"] > 0
            assert row["error_reconstruction"] is not None and row["error_original"] is not None
    # the two-stage run trained its units once, within their budget; the probe reads those codes
    units = json.loads((out / "recipe" / "exp" / "units" / "train_summary.json").read_text())
    assert units["minutes"] < 0.05 and rows[0]["accuracy"] == rows[1]["accuracy"]
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert (out / "curve.md").read_text() in printed and "| recipe | 0.05 |" in printed

    # a point already scored is kept: the same command again trains nothing
    stamp = (out / "single" / "exp" / "checkpoints" / "last.pt").stat().st_mtime_ns
    assert learning_curve.main(args) == 0
    assert (out / "single" / "exp" / "checkpoints" / "last.pt").stat().st_mtime_ns == stamp
    assert json.loads((out / "curve.json").read_text()) == rows


def test_bad_arguments_are_one_sentence(tmp_path, capsys):
    import learning_curve

    base = ["--manifest", str(tmp_path / "m.jsonl"), "--out_dir", str(tmp_path / "o")]
    assert learning_curve.main([*base, "--configs", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert learning_curve.main([*base, "--minutes", "3"]) == 2  # within the units stage's 5 minutes
    assert "units stage" in capsys.readouterr().err
    assert learning_curve.main([*base, "--minutes", "ten"]) == 2
    assert "--minutes" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_scoring_inputs_are_checked_before_any_training(demo_manifest, tmp_path, capsys, monkeypatch):
    """--num_eval and the manifest's alignments are needed only after a training; they are checked first."""
    import ablate
    import learning_curve

    def no_training(*args, **kwargs):
        raise AssertionError("trained before the scoring inputs were checked")

    monkeypatch.setattr(ablate, "train_vqvae", no_training)
    monkeypatch.setattr(learning_curve, "train_vqvae", no_training)
    rows = [json.loads(line) for line in demo_manifest.read_text().splitlines()]
    for row in rows:
        row.pop("alignment", None)
        row["audio"] = str(demo_manifest.parent / row["audio"])
    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for tool in (ablate, learning_curve):
        common = ["--out_dir", str(tmp_path / tool.__name__), "--minutes", "6"]
        assert tool.main([*common, "--manifest", str(demo_manifest), "--num_eval", "0"]) == 2
        assert "--num_eval must be at least 1" in capsys.readouterr().err
        assert tool.main([*common, "--manifest", str(bare)]) == 2
        assert "has a phone alignment" in capsys.readouterr().err
        assert not (tmp_path / tool.__name__).exists()


def test_a_schedule_that_ends_before_its_point_names_the_option(demo_manifest, tmp_path, capsys):
    """Steps a minute set too low for this machine: the schedule ended the first point's run in
    seconds, the point was scored as if trained for its minutes, and the next one asked to raise
    train.max_steps, which the tool sets itself."""
    import learning_curve

    out = tmp_path / "curve"
    args = ["--manifest", str(demo_manifest), "--out_dir", str(out), "--configs", "single", "--minutes", "0.5,1",
            "--steps_per_minute", "4", "--num_eval", "1", "--probe_split", "", "--", *SHRINK]
    assert learning_curve.main(args) == 2
    error = capsys.readouterr().err
    assert "trained its whole schedule (4 steps" in error and "--steps_per_minute" in error
    assert not (out / "single" / "0.5min" / "score.json").exists()  # nothing scored as half a minute's
