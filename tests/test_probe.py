"""The phoneme probe: unit metrics on hand-built cases, frame labelling, probes, baseline, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import run_cli
from vqspeech.data.alignments import Segment, write_textgrid
from vqspeech.data.phones import PhoneFolding
from vqspeech.eval import classifiers
from vqspeech.eval.frames import ProbeData, frame_spans, labels_from_spans
from vqspeech.eval.probe import frame_table, probe_metrics
from vqspeech.eval.code_metrics import (chance_baselines, cluster_purity, contingency, mapping_accuracy, pnmi,
                                        phone_purity, code_scores)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- unit metrics -------------------------------------------------------------------------------

def test_metrics_of_a_hand_counted_table():
    # code 0: phone 0 three times, phone 1 once; code 1: phone 0 twice
    codes = np.array([0, 0, 0, 0, 1, 1])
    phones = np.array([0, 0, 0, 1, 0, 0])
    counts = contingency(codes, phones, 2, 2)
    assert counts.tolist() == [[3, 1], [2, 0]]
    assert phone_purity(counts) == pytest.approx(5 / 6)
    assert cluster_purity(counts) == pytest.approx(4 / 6)  # phone 0 -> code 0 (3), phone 1 -> code 0 (1)
    p = counts / 6
    pc, pp = p.sum(1), p.sum(0)
    mutual = sum(p[i, j] * math.log(p[i, j] / (pc[i] * pp[j])) for i in range(2) for j in range(2) if p[i, j])
    entropy = -sum(x * math.log(x) for x in pp)
    assert pnmi(counts) == pytest.approx(mutual / entropy)


def test_one_code_per_phone_scores_perfectly_and_independent_codes_score_nothing():
    phones = np.tile(np.arange(4), 50)
    groups = np.repeat(np.arange(4), 50)
    perfect = code_scores(phones + 3, phones, groups, 8, 4)
    assert perfect == pytest.approx({"accuracy": 1.0, "pnmi": 1.0, "phone_purity": 1.0, "cluster_purity": 1.0})
    codes = np.repeat(np.arange(5), 40)  # every code sees every phone equally often
    independent = code_scores(codes, phones, groups, 5, 4)
    assert independent["pnmi"] == pytest.approx(0.0, abs=1e-12)
    assert independent["phone_purity"] == pytest.approx(0.25)


def test_mapping_is_learned_on_the_other_speakers():
    # speaker 0 says phone 0 with code 0, speaker 1 says phone 1 with code 0: a mapping learned on one
    # speaker is wrong for the other, although on pooled frames code 0 is 50% pure.
    codes = np.zeros(20, dtype=int)
    phones = np.repeat([0, 1], 10)
    groups = np.repeat([0, 1], 10)
    accuracy, predictions = mapping_accuracy(codes, phones, groups, 1, 2)
    assert accuracy == 0.0 and predictions.tolist() == [1] * 10 + [0] * 10
    assert phone_purity(contingency(codes, phones, 1, 2)) == 0.5


def test_a_code_unseen_in_the_other_speakers_falls_back_to_their_majority_phone():
    codes = np.array([0, 0, 0, 1, 1, 7])  # code 7 only in speaker 1
    phones = np.array([2, 2, 1, 2, 2, 0])
    groups = np.array([0, 0, 0, 1, 1, 1])
    _, predictions = mapping_accuracy(codes, phones, groups, 8, 3)
    assert predictions[5] == 2  # speaker 0's majority phone


def test_chance_baselines():
    rng = np.random.default_rng(0)
    phones = rng.choice(5, size=4000, p=[0.4, 0.3, 0.1, 0.1, 0.1])
    groups = np.repeat(np.arange(4), 1000)
    chance = chance_baselines(phones, groups, 64, 5)
    majority = np.mean(phones == 0)
    assert chance["majority_phone"]["accuracy"] == pytest.approx(majority)
    assert chance["majority_phone"]["pnmi"] == pytest.approx(0.0, abs=1e-12)
    assert chance["random_codes"]["accuracy"] < majority + 0.02
    assert chance["random_codes"]["pnmi"] < 0.03


# --- frames -------------------------------------------------------------------------------------

def test_frames_take_the_phone_at_their_centre():
    folding = PhoneFolding.load("timit61")
    segments = [Segment(0.0, 0.032, "ah"), Segment(0.05, 0.08, "t"), Segment(0.08, 0.1, "q"),
                Segment(0.1, 0.12, "tcl"), Segment(0.12, 0.13, "t")]
    spans = frame_spans(segments, folding, 16, 100.0, 0.005)  # centres 5, 15, 25, ... ms
    # ah ends at 32 ms, so the frame centred at 35 ms is in the gap (silence); q is excluded;
    # tcl + t fold to one t
    assert spans == [(0, 3, "ah"), (3, 5, "sil"), (5, 8, "t"), (8, 10, ""), (10, 13, "t"), (13, 16, "sil")]
    labels = labels_from_spans(spans, 16)
    assert labels.tolist() == ["ah"] * 3 + ["sil"] * 2 + ["t"] * 3 + [""] * 2 + ["t"] * 3 + ["sil"] * 3
    # frames centred on segment starts (offset 0): frame 5 at exactly 50 ms belongs to "t"
    assert frame_spans(segments[:2], folding, 9, 100.0, 0.0) == [(0, 4, "ah"), (4, 5, "sil"), (5, 8, "t"),
                                                                 (8, 9, "sil")]


# --- classifiers --------------------------------------------------------------------------------

def test_speaker_id_from_code_histograms_sees_speaker_dependent_codes_only():
    rng = np.random.default_rng(0)
    speakers = np.repeat(np.array(["a", "b", "c", "d"]), 30)
    shared = [rng.integers(0, 32, 100) for _ in speakers]  # the same code distribution for all
    leaky = [np.concatenate([c, rng.integers(8 * i, 8 * i + 8, 30)])  # + a speaker-specific range
             for c, i in zip(shared, np.repeat(np.arange(4), 30))]
    assert classifiers.speaker_id_accuracy(classifiers.code_histograms(leaky, 32), speakers) > 0.95
    assert classifiers.speaker_id_accuracy(classifiers.code_histograms(shared, 32), speakers) < 0.45
    assert classifiers.speaker_id_accuracy(np.zeros((3, 2)), np.array(["a", "a", "b"])) is None


def test_linear_probe_reads_linearly_coded_phones_across_speakers():
    rng = np.random.default_rng(0)
    phones = rng.integers(0, 6, 3000)
    groups = np.repeat(np.arange(3), 1000)
    directions = rng.normal(size=(6, 16))
    separable = directions[phones] + 0.3 * rng.normal(size=(3000, 16))
    assert classifiers.linear_probe_accuracy(separable, phones, groups) > 0.95
    noise = rng.normal(size=(3000, 16))
    assert classifiers.linear_probe_accuracy(noise, phones, groups) < 0.3
    assert classifiers.linear_probe_accuracy(noise, phones, np.zeros(3000)) is None


# --- end to end ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_codes(trained_tiny, demo_manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "codes"
    assert run_cli(["encode", trained_tiny, demo_manifest, out, "--latents"]) == 0
    return out


def test_probe_on_the_demo_corpus_writes_every_metric_and_plot(demo_codes, demo_manifest, tmp_path, capsys):
    out = tmp_path / "probe" / "vqvae.json"
    assert run_cli(["evaluate", "probe", "--codes", demo_codes, "--manifest", demo_manifest, "--out", out,
                    "--name", "vqvae"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    result = json.loads(out.read_text())
    assert printed["accuracy"] == pytest.approx(result["accuracy"], abs=1e-4)
    for key in ("accuracy", "pnmi", "phone_purity", "cluster_purity", "abx_within", "abx_across",
                "speaker_id_acc", "speaker_id_acc_input", "linear_probe_accuracy", "abx_within_latents"):
        assert 0.0 <= result[key] <= 1.0, key
    assert result["num_utterances"] == 24 and result["num_speakers"] > 2
    assert result["num_frames"] > 1000 and 10 < result["num_phone_classes"] <= 41
    assert result["phone_set"] == "espeak" and result["mapping_protocol"] == "leave-one-speaker-out"
    assert result["baselines"]["majority_phone"]["pnmi"] == pytest.approx(0.0, abs=1e-12)
    assert result["speaker_id_acc_input"] > 3 * result["speaker_id_chance"]  # MFCC statistics tell the voices apart
    for name in result["plots"].values():
        assert (out.parent / name).read_bytes()[:8] == PNG_MAGIC
    # the same probe without silence frames
    quiet = tmp_path / "no_sil.json"
    assert run_cli(["evaluate", "probe", "--codes", demo_codes, "--manifest", demo_manifest, "--out", quiet,
                    "--ignore", "sil", "--no_abx"]) == 0
    quiet_result = json.loads(quiet.read_text())
    assert "sil" not in quiet_result["per_phone_accuracy"] and "abx_within" not in quiet_result
    assert quiet_result["num_frames"] < result["num_frames"]


def test_probe_on_continuous_features_alone(demo_codes, demo_manifest, tmp_path):
    """A folder with latents/ and no codes/ (e.g. another model's features): ABX, probes, no mapping."""
    import shutil

    from vqspeech.eval.probe import run_probe

    features = tmp_path / "features"
    shutil.copytree(demo_codes / "latents", features / "latents")
    shutil.copy(demo_codes / "codes.json", features / "codes.json")
    result = run_probe(features, tmp_path / "features.json", manifest=demo_manifest, progress=False)
    assert result["accuracy"] is None and result["pnmi"] is None and result["plots"] == {}
    assert result["abx_features"].startswith("continuous") and 0 < result["abx_within"] < 0.5
    assert result["speaker_id_features"] == "mean and std of the features"
    assert 0 < result["linear_probe_accuracy"] <= 1 and 0 < result["speaker_id_acc"] <= 1
    assert result["baselines"]["majority_phone"]["accuracy"] > 0


def test_probe_refuses_to_overwrite_and_explains_mismatched_ids(demo_codes, demo_manifest, tmp_path, capsys):
    out = tmp_path / "m.json"
    out.write_text("keep")
    assert run_cli(["evaluate", "probe", "--codes", demo_codes, "--manifest", demo_manifest, "--out", out]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == "keep"
    aligned = tmp_path / "aligned"
    aligned.mkdir()
    write_textgrid(aligned / "someone_else.TextGrid", {"phones": [Segment(0, 0.1, "AH")]}, 0.1)
    assert run_cli(["evaluate", "probe", "--codes", demo_codes, "--alignments", aligned, "--out", tmp_path / "x.json"]) == 2
    err = capsys.readouterr().err
    assert "No utterance has both codes and a phone alignment" in err and len(err.strip().splitlines()) == 1
    assert run_cli(["evaluate", "probe", "--codes", tmp_path, "--manifest", demo_manifest, "--out", tmp_path / "y.json"]) == 2
    assert "is not a codes folder" in capsys.readouterr().err


def test_mfcc_kmeans_baseline_writes_the_codes_layout(demo_codes, demo_manifest, tmp_path, capsys):
    out = tmp_path / "mfcc"
    assert run_cli(["baseline", "mfcc-kmeans", demo_manifest, out, "--like", demo_codes, "--num_codes", "16"]) == 0
    meta = json.loads((out / "codes.json").read_text())
    model_meta = json.loads((demo_codes / "codes.json").read_text())
    assert meta["K"] == 16 and meta["code_rate_hz"] == model_meta["code_rate_hz"]
    assert sorted(p.name for p in (out / "codes").iterdir()) == sorted(p.name for p in (demo_codes / "codes").iterdir())
    some = sorted((out / "codes").iterdir())[0]
    codes, latents = np.load(some), np.load(out / "latents" / some.name)
    assert codes.max() < 16 and latents.shape == (len(codes), 39)
    assert len(codes) == len(np.load(demo_codes / "codes" / some.name))  # same frame grid as the model
    assert run_cli(["baseline", "mfcc-kmeans", demo_manifest, out]) == 2
    assert "--overwrite" in capsys.readouterr().err
    probe = tmp_path / "mfcc.json"
    assert run_cli(["evaluate", "probe", "--codes", out, "--manifest", demo_manifest, "--out", probe, "--no_abx"]) == 0
    assert json.loads(probe.read_text())["codes_used"] > 8


def test_probe_on_real_fsdd_beats_chance(fsdd_manifest, tmp_path):
    """Pocketsphinx alignments of real FSDD speech; the MFCC units carry phone information."""
    from vqspeech.data.align import align_corpus
    from vqspeech.eval.baseline import mfcc_kmeans_baseline
    from vqspeech.eval.probe import run_probe

    summary = align_corpus(fsdd_manifest, tmp_path / "align", num_workers=1, progress=False)
    assert summary.aligned >= 0.95 * summary.total
    mfcc_kmeans_baseline(fsdd_manifest, tmp_path / "mfcc", num_codes=32, progress=False)
    result = run_probe(tmp_path / "mfcc", tmp_path / "probe.json", alignments=tmp_path / "align",
                       abx=False, plots=False, progress=False)
    chance = result["baselines"]["majority_phone"]["accuracy"]
    assert result["accuracy"] > chance + 0.05
    assert result["pnmi"] > 0.2 > result["baselines"]["random_codes"]["pnmi"]
    assert result["num_speakers"] == 2  # speakers come from codes.json when the alignments are a folder


def test_probe_reads_a_timit_corpus_by_its_ids(tmp_path):
    """`--corpus DIR --layout timit`: ids dr1-fvmh0_sa1, .phn times, TIMIT-61 folding (h# -> sil)."""
    from test_timit import write_timit_utterance

    corpus, codes_dir = tmp_path / "timit", tmp_path / "codes"
    (codes_dir / "codes").mkdir(parents=True)
    speakers = {}
    for speaker in ("dr1-fvmh0", "dr3-madc0", "dr5-mrws1"):
        for utt in ("sa1", "sx206"):
            write_timit_utterance(corpus / speaker, utt, upper=False)  # h# 0-.15 s, sh -.1875, iy -.3
            # one code per phone, at 100 codes/s with frame centres at 5, 15, ... ms
            np.save(codes_dir / "codes" / f"{speaker}_{utt}.npy", np.array([7] * 15 + [3] * 4 + [5] * 11))
            speakers[f"{speaker}_{utt}"] = speaker
    (codes_dir / "codes.json").write_text(json.dumps({"code_rate_hz": 100.0, "K": 8, "speakers": speakers}))
    out = tmp_path / "timit.json"
    assert run_cli(["evaluate", "probe", "--codes", codes_dir, "--corpus", corpus, "--layout", "timit", "--out", out,
                    "--no_abx"]) == 0
    result = json.loads(out.read_text())
    assert result["phone_set"] == "timit61" and result["num_utterances"] == 6 and result["num_speakers"] == 3
    assert result["per_phone_accuracy"] == {"iy": 1.0, "sh": 1.0, "sil": 1.0}
    assert (result["accuracy"], result["pnmi"], result["codes_used"]) == (1.0, pytest.approx(1.0), 3)


def test_excluded_labels_are_no_abx_items_and_one_group_has_no_held_out_mapping():
    from vqspeech.eval.abx import build_items

    spans = [[(0, 3, "sil"), (3, 6, "aa"), (6, 8, ""), (8, 11, "b"), (11, 14, "aa"), (14, 16, "sil")]]
    items = build_items(spans, ["s"], context=False)
    assert items.categories == ("aa", "b") and len(items.utt) == 3
    triphones = build_items(spans, ["s"], context=True)  # aa(sil,""), b("",aa) have an excluded side
    assert triphones.contexts == ("b+sil",) and triphones.categories == ("aa",)
    accuracy, _ = mapping_accuracy(np.zeros(5, dtype=int), np.arange(5) % 2, np.zeros(5, dtype=int), 1, 2)
    assert accuracy is None


def test_probe_user_errors_name_the_problem(demo_codes, demo_manifest, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert run_cli(["evaluate", "probe", "--codes", demo_codes, "--manifest", demo_manifest, "--out", out,
                    "--split", "nosuch"]) == 2
    assert "No aligned utterance is in split 'nosuch' (splits: test, train, valid)" in capsys.readouterr().err
    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(line.replace('"alignment"', '"unused"') + "\n"
                            for line in demo_manifest.read_text().splitlines()))
    assert run_cli(["evaluate", "probe", "--codes", demo_codes, "--manifest", bare, "--out", out]) == 2
    assert "has a phone alignment; run `vqspeech align" in capsys.readouterr().err
    broken = tmp_path / "broken"
    (broken / "codes").mkdir(parents=True)
    (broken / "codes.json").write_text(json.dumps({"code_rate_hz": 100.0}))
    np.save(broken / "codes" / "x.npy", np.array([3, -1]))
    assert run_cli(["evaluate", "probe", "--codes", broken, "--manifest", demo_manifest, "--out", out]) == 2
    assert "does not hold codes (integers from 0 to 32767" in capsys.readouterr().err
    assert run_cli(["evaluate", "probe", "--codes", demo_codes, "--manifest", demo_manifest, "--out", out,
                    "--abx_max_items", "0"]) == 2
    assert "--abx_max_items, given 0" in capsys.readouterr().err and not out.exists()


def test_compare_alignments_scores_an_alignment_against_itself_perfectly(demo_manifest):
    """tools/compare_alignments.py labels 10 ms frames the way the probe labels code frames."""
    import sys
    from pathlib import Path

    from vqspeech.data.manifest import read_manifest

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from compare_alignments import compare

    folder = Path(read_manifest(demo_manifest)[0].alignment).parent
    scores = compare(str(demo_manifest), str(folder))
    assert scores["utterances"] == 24 and scores["frame_agreement"] == 1.0
    assert scores["word_boundary_within_20ms"] == 1.0


def test_scores_without_silence_on_a_hand_counted_table():
    """Silence frames are left out and the held-out mapping is learned on speech frames only.
    Speech frames: A (0 aa) (1 aa) (1 b); B (0 aa) (1 aa) (1 b) (2 b). A's mapping from B's frames:
    0 aa, 1 aa (tie, first class), 2 b -> 2 of 3 right; B's from A's: 0 aa, 1 aa, 2 unseen -> A's
    majority aa -> 2 of 4 right: 4 of 7."""
    labels = [np.array(["sil", "aa", "aa", "b", "sil"]), np.array(["aa", "aa", "b", "b", "sil"])]
    data = ProbeData(ids=["a1", "b1"], speakers=["A", "B"], codes=[np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 2, 2])],
                     latents=None, labels=labels, spans=[[], []], audio=[None, None], num_codes=3,
                     code_rate_hz=100.0, phone_set="arpabet")
    result = probe_metrics(data, frame_table(data), abx=False, input_features=False)
    assert result["num_frames"] == 10 and result["num_frames_no_silence"] == 7
    assert result["accuracy_no_silence"] == pytest.approx(4 / 7)
    assert result["pnmi_no_silence"] == pytest.approx(pnmi(np.array([[2, 0], [2, 2], [0, 1]])))
    assert result["pnmi_no_silence"] != pytest.approx(result["pnmi"])
    assert result["baselines"]["majority_phone"]["accuracy_no_silence"] == pytest.approx(4 / 7)  # aa everywhere
