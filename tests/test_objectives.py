"""Unit objectives and two-stage training: the mel objective learns on real audio, the decoder
stage trains the waveform decoder on frozen codes (encoder, codebook and head bit-identical), and a
units-only model says how to get a decoder instead of decoding noise."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from scipy.fft import dct as scipy_dct
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import FAST_TRAIN, run_cli
from vqspeech.checkpoint import load_checkpoint
from vqspeech.config import compose, training_stage
from vqspeech.data.dataset import StepBatchSampler
from vqspeech.data.manifest import load_utterance, read_manifest, speakers_of
from vqspeech.errors import UserError
from vqspeech.eval.loss import teacher_forced_metrics
from vqspeech.inference import VQSpeech
from vqspeech.models.cpc import CPCHead, same_speaker_negatives
from vqspeech.models.frontend import LogMelFrontend, vtlp_frequencies
from vqspeech.models.mel_decoder import MelDecoder
from vqspeech.models.speaker_adversary import SpeakerAdversary
from vqspeech.models.vqvae import VQVAE
from vqspeech.training.experiment import seed_everything
from vqspeech.training.vqvae_task import UNIT_PREFIXES

CPU = torch.device("cpu")
MEL = ["model.objective=mel", "train.lr=3e-3", "train.warmup_steps=5", "train.schedule=constant"]


@pytest.fixture(scope="module")
def units_exp(tmp_path_factory, fsdd_manifest):
    """The units stage of the mel objective, 80 steps on real FSDD speech."""
    exp = tmp_path_factory.mktemp("objectives") / "units"
    assert run_cli(["train", exp, *FAST_TRAIN, *MEL, f"data.manifest={fsdd_manifest}", "train.max_steps=80"]) == 0
    return exp


def test_stage_follows_the_config():
    assert training_stage({"model": {"objective": "wavenet"}, "train": {"units_from": None}}) == "joint"
    assert training_stage({"model": {"objective": "mel"}, "train": {"units_from": None}}) == "units"
    assert training_stage({"model": {"objective": "mel"}, "train": {"units_from": "/x"}}) == "decoder"
    assert training_stage({"model": {}}) == "joint"  # a config from before objectives existed


def test_mel_decoder_shapes_and_masked_frames():
    torch.manual_seed(0)
    head = MelDecoder(3, latent_dim=8, sample_rate=8000, hop_length=80, n_mels=20, channels=16, dilations=[1, 2])
    audio = torch.randn(2, 800) * 0.1
    latents = torch.randn(2, 8, 10)
    out = head.reconstruct(audio, latents, torch.tensor([0, 2]))
    assert out.predicted.shape == out.target.shape == (2, 20, 10)
    # a padded frame (any sample masked) does not count: changing its prediction changes nothing
    mask = torch.ones(2, 800)
    mask[1, 760:] = 0
    masked = head.reconstruct(audio, latents, torch.tensor([0, 2]), mask).loss
    per_frame = (out.predicted - out.target).abs().mean(1)
    assert masked.item() == pytest.approx(float(per_frame.detach().flatten()[:19].mean()), rel=1e-5)


def test_mel_objective_learns_on_real_speech(units_exp, fsdd_manifest):
    """The units stage's log-mel L1 falls well below the untrained model's on held-out utterances."""
    cfg = compose([*FAST_TRAIN, *MEL, f"data.manifest={fsdd_manifest}"])
    speakers = speakers_of(read_manifest(fsdd_manifest, "train"))
    ids = {s: i for i, s in enumerate(speakers)}
    seed_everything(cfg["seed"])
    untrained = VQVAE.from_config(cfg["model"], len(speakers))
    held_out = read_manifest(fsdd_manifest, "valid")[:6]
    before = teacher_forced_metrics(untrained, held_out, ids, CPU)
    trained = VQSpeech.load(units_exp, "cpu")
    assert trained.units_only and trained.model.stage == "units"
    after = teacher_forced_metrics(trained.model, held_out, ids, CPU)
    assert set(before) >= {"mel_l1", "codes_used"} and "bits_per_sample" not in after
    assert after["mel_l1"] < 0.7 * before["mel_l1"], (before, after)
    assert after["codes_used"] >= 16
    summary = json.loads((units_exp / "train_summary.json").read_text())
    assert summary["step"] == 80 and np.isfinite(summary["valid_mel_l1"])


def test_decoder_stage_keeps_the_units_bit_identical(tmp_path, units_exp, fsdd_manifest):
    exp = tmp_path / "decoder"
    assert run_cli(["train", exp, *FAST_TRAIN, *MEL, f"data.manifest={fsdd_manifest}", "train.max_steps=30",
                    f"train.units_from={units_exp}"]) == 0
    units, full = load_checkpoint(units_exp / "checkpoints" / "last.pt"), load_checkpoint(exp / "checkpoints" / "last.pt")
    unit_keys = [k for k in units["model"] if k.startswith(UNIT_PREFIXES)]
    assert any(k.startswith("encoder.") for k in unit_keys) and any("codebook" in k for k in unit_keys)
    for key in unit_keys:  # encoder, codebook (and its usage statistics), the mel head: untouched
        assert torch.equal(units["model"][key], full["model"][key]), key
    decoder_keys = [k for k in units["model"] if k.startswith("decoder.")]
    assert any(not torch.equal(units["model"][k], full["model"][k]) for k in decoder_keys)  # the decoder learned
    assert full["speakers"] == units["speakers"]
    vq = VQSpeech.load(exp, "cpu")
    assert not vq.units_only and vq.model.stage == "decoder"
    utt = read_manifest(fsdd_manifest, "test")[0]
    audio, sr = load_utterance(utt), utt.sample_rate
    assert np.array_equal(vq.encode(audio, sr).codes, VQSpeech.load(units_exp, "cpu").encode(audio, sr).codes)
    wav = vq.convert(audio[: sr // 2], sr, speaker=vq.speakers[1])
    assert np.all(np.isfinite(wav)) and len(wav) == sr // 2 // vq.hop_length * vq.hop_length
    metrics = teacher_forced_metrics(vq.model, read_manifest(fsdd_manifest, "valid")[:2], vq.speaker_ids, CPU)
    assert "bits_per_sample" in metrics


def test_a_units_only_model_says_how_to_train_its_decoder(tmp_path, capsys, units_exp, fsdd_manifest):
    wav = read_manifest(fsdd_manifest, "test")[0].audio
    capsys.readouterr()
    assert run_cli(["convert", units_exp, wav, "--speaker", "george", "-o", tmp_path / "x.wav"]) == 2
    err = capsys.readouterr().err
    assert "learned units only" in err and "train.units_from" in err and "Traceback" not in err
    assert not (tmp_path / "x.wav").exists()


def test_the_decoder_stage_refuses_units_of_another_shape(tmp_path, capsys, units_exp, fsdd_manifest):
    capsys.readouterr()
    assert run_cli(["train", tmp_path / "d", *FAST_TRAIN, *MEL, f"data.manifest={fsdd_manifest}",
                    f"train.units_from={units_exp}", "model.num_codes=64"]) == 2
    err = capsys.readouterr().err
    assert "model.num_codes" in err and "Traceback" not in err
    assert not (tmp_path / "d" / "checkpoints").exists()


def test_a_decoder_stage_on_fewer_speakers_does_not_offer_the_voices_it_never_heard(tmp_path, capsys, units_exp,
                                                                                    fsdd_manifest):
    rows = [json.loads(line) for line in fsdd_manifest.read_text().splitlines() if line.strip()]
    speakers = sorted({r["speaker"] for r in rows})
    heard, unheard = speakers[0], speakers[1]
    for row in rows:
        row["audio"] = str((fsdd_manifest.parent / row["audio"]).resolve())
    fewer = tmp_path / "fewer.jsonl"  # the second speaker's training utterances left out
    fewer.write_text("".join(json.dumps(r) + "\n" for r in rows if r["speaker"] == heard or r["split"] != "train"))
    exp = tmp_path / "decoder"
    capsys.readouterr()
    assert run_cli(["train", exp, *FAST_TRAIN, *MEL, f"data.manifest={fewer}", "train.max_steps=2",
                    f"train.units_from={units_exp}"]) == 0
    assert f"trains on 1 of the 2 speakers its units know; without training utterances here, the voices of " \
           f"{unheard} stay unlearned" in capsys.readouterr().err
    vq = VQSpeech.load(exp, "cpu")
    assert vq.speakers == speakers and vq.untrained_speakers == {unheard}
    wav = read_manifest(fsdd_manifest, "test")[0].audio
    capsys.readouterr()
    assert run_cli(["convert", exp, wav, "--speaker", unheard, "-o", tmp_path / "x.wav"]) == 2
    err = capsys.readouterr().err
    assert f"never trained on {unheard!r}'s voice" in err and heard in err and not (tmp_path / "x.wav").exists()
    from vqspeech.eval.conversion import _assign_targets

    items = read_manifest(fewer, "test")
    with pytest.raises(UserError, match=f"speaks only one voice \\({heard}\\)"):  # the rotation: learned voices
        _assign_targets(items, None, vq)
    from vqspeech.eval.conversion import _select
    from vqspeech.eval.loss import evaluate_loss
    from vqspeech.eval.report import write_report

    assert {u.speaker for u in _select(items, "test", 10, vq.voiced_speakers, 0, fewer)} == {heard}  # sources too
    with pytest.warns(UserWarning, match=f"decoder never trained on their speakers \\({unheard}\\)"):  # scored as if it spoke them
        metrics = evaluate_loss(exp, split="test", out=exp / "metrics.json", manifest=fewer)
    unheard_items = sum(u.speaker == unheard for u in items)
    assert unheard_items and metrics["utterances_of_untrained_speakers"] == unheard_items
    assert metrics["utterances"] == len(items) - unheard_items
    summary = write_report(exp).read_text().split('<section id="summary">')[1].split("</section>")[0]
    assert f"<tr><th>Voices its decoder never trained (refused as targets)</th><td>{unheard}</td></tr>" in summary


def test_gradient_reversal_flips_the_classifiers_gradient():
    """The classifier's own weights get the ordinary gradient; the latents get it times -weight."""
    torch.manual_seed(0)
    adversary = SpeakerAdversary(latent_dim=4, num_speakers=3, weight=0.5, hidden=8)
    latents = torch.randn(2, 4, 6, requires_grad=True)
    speakers = torch.tensor([0, 2])
    out = adversary(latents, speakers)
    out.loss.backward()
    reversed_grad = latents.grad.clone()
    classifier_grad = [p.grad.clone() for p in adversary.parameters()]

    plain = latents.detach().clone().requires_grad_(True)
    adversary.zero_grad()
    logits = adversary.classifier(plain)
    loss = torch.nn.functional.cross_entropy(logits, speakers[:, None].expand(-1, 6))
    loss.backward()
    assert loss.item() == pytest.approx(out.loss.item())
    torch.testing.assert_close(reversed_grad, -0.5 * plain.grad)
    for before, param in zip(classifier_grad, adversary.parameters()):
        torch.testing.assert_close(before, param.grad)
    assert 0.0 <= float(out.accuracy) <= 1.0


def test_speaker_adversary_trains_with_the_units_and_stays_frozen_after(tmp_path, fsdd_manifest):
    exp = tmp_path / "adv"
    assert run_cli(["train", exp, *FAST_TRAIN, *MEL, f"data.manifest={fsdd_manifest}", "train.max_steps=10",
                    "model.speaker_adversary.weight=0.5", "model.encoder.normalize=true"]) == 0
    state = load_checkpoint(exp / "checkpoints" / "last.pt")["model"]
    assert any(k.startswith("speaker_adversary.") for k in state)
    model = VQSpeech.load(exp, "cpu").model
    model.set_stage("decoder")
    assert not any(p.requires_grad for p in model.speaker_adversary.parameters())


def test_the_vtlp_warp_scales_below_its_knee_and_keeps_both_ends():
    freqs = torch.linspace(0, 4000, 401)
    alpha = torch.tensor([0.85, 1.0, 1.15])
    warped = vtlp_frequencies(freqs, alpha, nyquist=4000.0)
    torch.testing.assert_close(warped[1], freqs.double())
    assert torch.all(warped[:, 0] == 0) and torch.allclose(warped[:, -1], torch.tensor(4000.0, dtype=torch.float64))
    assert torch.all(torch.diff(warped, dim=1) > 0)  # a warp never folds the axis
    low = freqs <= 2000  # below the knee (0.8 * nyquist * min(alpha, 1) / alpha >= 2,086 Hz)
    torch.testing.assert_close(warped[:, low], alpha[:, None].double() * freqs[low].double())


def test_the_warp_moves_a_real_voice_spectrum_in_training_only(fsdd_manifest):
    """VTLP on a real recording: a factor above 1 moves the mel spectrum's energy up, below 1 down;
    factor 1 is the plain filterbank; every crop of a batch gets its own factor; eval mode is plain."""
    utt = next(u for u in read_manifest(fsdd_manifest, "test") if u.duration > 0.4)
    audio = torch.from_numpy(load_utterance(utt))[None]
    frontend = LogMelFrontend(8000, 80, n_mels=80, warp=0.15)
    torch.testing.assert_close(frontend.warped_filters(torch.ones(1))[0], frontend.filters)

    def centroid(alpha: float) -> float:  # energy-weighted mean mel band over the utterance
        energy = torch.matmul(frontend.warped_filters(torch.tensor([alpha]))[0], frontend.power_spectrum(audio)[0])
        bands = torch.arange(80.0)[:, None]
        return float((bands * energy).sum() / energy.sum())

    low, plain, high = centroid(0.85), centroid(1.0), centroid(1.15)
    assert low < plain - 1.0 and high > plain + 1.0, (low, plain, high)

    frontend.eval()
    torch.testing.assert_close(frontend(audio.repeat(2, 1)), frontend(audio.repeat(2, 1)))
    frontend.train()
    torch.manual_seed(0)
    pair = frontend(audio.repeat(2, 1))
    assert not torch.allclose(pair[0], pair[1])  # two crops, two factors
    frontend.eval()
    plain_features = frontend(audio)
    assert not torch.allclose(pair[0], plain_features[0])


def test_the_warp_trains_the_units_and_needs_the_mel_front_end(tmp_path, capsys, fsdd_manifest):
    exp = tmp_path / "warp"
    assert run_cli(["train", exp, *FAST_TRAIN, *MEL, f"data.manifest={fsdd_manifest}", "train.max_steps=10",
                    "model.encoder.warp=0.15", "model.encoder.normalize=true"]) == 0
    vq = VQSpeech.load(exp, "cpu")
    assert vq.model.encoder.frontend.warp == 0.15
    audio = load_utterance(read_manifest(fsdd_manifest, "test")[0])
    first = vq.encode(audio, 8000, latents=True)
    vq.model.encoder.frontend.warp = 0.0
    np.testing.assert_array_equal(first.latents, vq.encode(audio, 8000, latents=True).latents)  # no warp in eval
    capsys.readouterr()
    assert run_cli(["train", tmp_path / "conv", *FAST_TRAIN, f"data.manifest={fsdd_manifest}",
                    "model.encoder.frontend=conv", "model.encoder.warp=0.1"]) == 2
    err = capsys.readouterr().err
    assert "model.encoder.warp" in err and "conv front end" in err and "Traceback" not in err


def test_cepstra_are_the_mfccs_of_the_log_mel_frames_and_drop_the_pitch_harmonics(fsdd_manifest):
    """``cepstra=N``: the first N coefficients of the orthonormal DCT-II of each log-mel frame (scipy's
    MFCCs); turned back into bands they keep the envelope and lose the harmonics, so two recordings
    of one vowel at different pitches are closer than their log-mel frames are."""
    utt = next(u for u in read_manifest(fsdd_manifest, "test") if u.duration > 0.4)
    audio = torch.from_numpy(load_utterance(utt))[None]
    plain, cepstral = LogMelFrontend(8000, 80, n_mels=80), LogMelFrontend(8000, 80, n_mels=80, cepstra=13)
    log_mel, cepstra = plain(audio)[0].numpy(), cepstral(audio)[0].numpy()
    assert cepstra.shape == (13, log_mel.shape[1]) and cepstral.out_channels == 13
    np.testing.assert_allclose(cepstra, scipy_dct(log_mel, type=2, axis=0, norm="ortho")[:13], atol=2e-4)

    t = torch.arange(4000) / 8000  # a harmonic voice with one fixed envelope (two formants), at 110 and 130 Hz

    def voice(f0: float) -> torch.Tensor:
        frequencies = f0 * torch.arange(1, int(3900 // f0) + 1)
        envelope = torch.exp(-(((frequencies - 700.0) / 400.0) ** 2)) + 0.5 * torch.exp(-(((frequencies - 1800.0) / 500.0) ** 2))
        return (envelope[:, None] * torch.sin(2 * np.pi * frequencies[:, None] * t)).sum(0)[None]

    low, high = voice(110.0), voice(130.0)

    def bands(frontend: LogMelFrontend, audio: torch.Tensor) -> torch.Tensor:  # the cepstra back as 80 bands
        features = frontend(audio)[0, :, 5:-5].mean(1)
        features = features if frontend.dct is None else frontend.dct.T @ features
        return features - features.mean()  # the level (fewer harmonics at a higher pitch) is not the point

    spread = (bands(plain, low) - bands(plain, low).mean()).norm()  # how much the envelope varies over bands
    change_plain = float((bands(plain, low) - bands(plain, high)).norm() / spread)
    change_cepstral = float((bands(cepstral, low) - bands(cepstral, high)).norm() / spread)
    assert change_cepstral < 0.5 * change_plain, (change_cepstral, change_plain)
    with pytest.raises(ValueError, match="cepstra=90"):
        LogMelFrontend(8000, 80, n_mels=80, cepstra=90)


def test_cepstra_train_the_units_and_are_checked_as_config(tmp_path, capsys, fsdd_manifest):
    exp = tmp_path / "cepstra"
    assert run_cli(["train", exp, *FAST_TRAIN, *MEL, f"data.manifest={fsdd_manifest}", "train.max_steps=10",
                    "model.encoder.cepstra=13", "model.encoder.normalize=true"]) == 0
    vq = VQSpeech.load(exp, "cpu")
    assert vq.model.encoder.frontend.out_channels == 13
    latents = vq.encode(load_utterance(read_manifest(fsdd_manifest, "test")[0]), 8000, latents=True).latents
    assert latents.shape[-1] == vq.config["model"]["latent_dim"] and np.isfinite(latents).all()
    for bad, words in (("model.encoder.cepstra=100", "model.encoder.n_mels"),
                       ("model.encoder.frontend=conv model.encoder.cepstra=13", "conv front end")):
        capsys.readouterr()
        assert run_cli(["train", tmp_path / "bad", *FAST_TRAIN, f"data.manifest={fsdd_manifest}", *bad.split()]) == 2
        err = capsys.readouterr().err
        assert "model.encoder.cepstra" in err and words in err and "Traceback" not in err
        assert not (tmp_path / "bad").exists()


def test_cpc_negatives_come_only_from_other_crops_of_the_same_speaker():
    torch.manual_seed(0)
    speakers = torch.tensor([0, 1, 0, 1, 2, 0])
    lengths = torch.tensor([10, 8, 5, 10, 7, 3])
    crops, times = same_speaker_negatives(speakers, lengths, frames=10, num=50)
    for b in range(6):
        drawn = crops[b].unique().tolist()
        if b == 4:  # the only crop of speaker 2: its own frames
            assert drawn == [4]
        else:
            assert b not in drawn and all(int(speakers[c]) == int(speakers[b]) for c in drawn)
            assert len(drawn) == int((speakers == speakers[b]).sum()) - 1  # every other crop is used
        assert bool((times[b] < lengths[crops[b]]).all())  # real frames only


def test_cpc_loss_prefers_predictable_codes():
    """InfoNCE starts near log(1 + negatives) and a few steps of training lower it."""
    torch.manual_seed(0)
    head = CPCHead(2, latent_dim=8, sample_rate=8000, hop_length=80, context_channels=16, prediction_steps=2,
                   negatives=5)
    pattern = torch.randn(8, 4)  # a repeating sequence of 4 frames: predictable from context
    latents = pattern.repeat(1, 6)[None].expand(4, -1, -1).contiguous()
    speakers = torch.tensor([0, 0, 1, 1])
    start = head.reconstruct(torch.zeros(4, 24 * 80), latents, speakers)
    assert start.loss.item() == pytest.approx(np.log(6), abs=0.6)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(60):
        loss = head.reconstruct(torch.zeros(4, 24 * 80), latents, speakers).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end = head.reconstruct(torch.zeros(4, 24 * 80), latents, speakers)
    assert end.loss.item() < 0.5 * start.loss.item() and float(end.accuracy) > 0.5


def test_batches_by_speaker_hold_crops_of_different_utterances(fsdd_manifest):
    utts = read_manifest(fsdd_manifest, "train")
    sampler = StepBatchSampler(utts, batch_size=8, crop_samples=4000, seed=1, speakers_per_batch=2)
    for step in range(20):
        picks = [r.utterance for r in sampler.batch(step)]
        for half in (picks[:4], picks[4:]):
            assert len({utts[i].speaker for i in half}) == 1 and len(set(half)) == 4
        assert utts[picks[0]].speaker != utts[picks[4]].speaker
    plain = StepBatchSampler(utts, batch_size=8, crop_samples=4000, seed=1)
    assert len({utts[r.utterance].speaker for s in range(20) for r in plain.batch(s)}) > 1


def test_cpc_objective_learns_on_real_speech(tmp_path, fsdd_manifest):
    exp = tmp_path / "cpc"
    assert run_cli(["train", exp, *FAST_TRAIN, "model.objective=cpc", "train.speakers_per_batch=2",
                    f"data.manifest={fsdd_manifest}", "train.max_steps=150", "train.lr=3e-3",
                    "train.warmup_steps=5", "train.log_every=5"]) == 0
    events = EventAccumulator(str(exp / "tb"))
    events.Reload()
    losses = [e.value for e in events.Scalars("train/cpc")]
    assert np.mean(losses[-5:]) < np.mean(losses[:3]) - 0.3, losses
    assert VQSpeech.load(exp, "cpu").units_only


def test_whitened_codes_train_on_real_speech_and_their_digest_covers_the_whitening(tmp_path, fsdd_manifest):
    from vqspeech.checkpoint import codebook_digest

    exp = tmp_path / "whitened"
    assert run_cli(["train", exp, *FAST_TRAIN, *MEL, f"data.manifest={fsdd_manifest}", "train.max_steps=20",
                    "model.quantizer.whiten=true", "model.speaker_adversary.weight=1"]) == 0
    vq = VQSpeech.load(exp, "cpu")
    quantizer = vq.model.quantizer
    assert quantizer.whiten and not torch.equal(quantizer.white_cov, torch.eye(quantizer.dim))  # estimated
    encoded = vq.encode(load_utterance(read_manifest(fsdd_manifest, "test")[0]), 8000, latents=True)
    latents = torch.from_numpy(encoded.latents).reshape(-1, quantizer.dim).float()
    assert np.array_equal(encoded.codes.reshape(-1), quantizer.nearest(quantizer.whitened(latents)).numpy())
    raw = quantizer.nearest(latents).numpy()  # the Euclidean choice in z's own coordinates differs
    assert not np.array_equal(encoded.codes.reshape(-1), raw)
    state = load_checkpoint(exp / "checkpoints" / "last.pt")["model"]
    moved = {**state, "quantizer.white_mean": state["quantizer.white_mean"] + 1}
    assert codebook_digest(moved) != codebook_digest(state)  # codes of another whitening are not these codes


def test_the_report_describes_a_units_stage_and_names_a_decoders_units(tmp_path, units_exp, fsdd_manifest):
    from vqspeech.eval.report import write_report

    units = tmp_path / "units"
    shutil.copytree(units_exp, units)
    for stale in ("report.html",):
        (units / stale).unlink(missing_ok=True)
    text = write_report(units, tmp_path / "units.html").read_text()
    assert "first stage of two (its waveform decoder is not trained yet)" in text
    assert "WaveNet decoder" not in text and f"train.units_from={units}" in text
    assert "A units stage has no waveform decoder to convert with" in text
    decoder = tmp_path / "decoder"
    assert run_cli(["train", decoder, *FAST_TRAIN, *MEL, f"data.manifest={fsdd_manifest}", "train.max_steps=1",
                    f"train.units_from={units}"]) == 0
    text = write_report(decoder).read_text()
    assert f"<tr><th>Units from</th><td>{units} (frozen)</td></tr>" in text and "WaveNet decoder" in text
