"""`write_report`: the HTML page's sections, escaping, robustness, attribution, and (when a Chromium
is installed) that every image and audio player on it really loads in a browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import soundfile as sf
import yaml

from helpers import tiny_model_config
from vqspeech.errors import UserError
from vqspeech.eval.report import write_report

EVIL = '<script>alert("x")</script>'
SPEAKERS = ["george", "jackson"]
KINDS = ("original", "reconstruction", "conversion")
UTTS = ["george_0_0", "george_0_1"]


def write_wav(path: Path, freq: float = 440.0, seconds: float = 0.3) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(8000 * seconds)) / 8000
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 8000, subtype="PCM_16")


def write_png(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1, 2], [1, 3, 2])
    fig.savefig(path, dpi=50)
    plt.close(fig)


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def probe_record(name: str, accuracy: float, with_baselines: bool) -> dict:
    record = {
        "accuracy": accuracy, "pnmi": 0.31, "phone_purity": 0.42, "cluster_purity": accuracy,
        "abx_within": 0.12, "abx_across": 0.19, "abx_within_triphone": 0.15, "abx_across_triphone": 0.22,
        "linear_probe_accuracy": None, "speaker_id_acc": 0.61, "speaker_id_acc_input": 0.97,
        "num_phone_classes": 39, "num_frames": 12345, "codes_used": 120, "K": 128,
        "some_future_metric": 1.5, "nested_future": {"a": 1},
        "plots": {"code_usage": f"{name}_code_usage.png", "code_phone": f"{name}_code_phone.png",
                  "phone_accuracy": f"{name}_phone_accuracy.png"},
    }
    if with_baselines:
        record["baselines"] = {"random_codes": {"accuracy": 0.072, "pnmi": 0.01},
                               "majority_phone": {"accuracy": 0.18, "cluster_purity": 1.0}}
    return record


@pytest.fixture
def exp(tmp_path) -> Path:
    """A complete fake experiment folder (as the recipe leaves it) with its prepared FSDD data."""
    data = tmp_path / "data" / "fsdd" / "prepared"
    lines = []
    for i, uid in enumerate(UTTS):
        write_wav(data / "wavs" / f"{uid}.wav", 300 + 50 * i)
        lines.append(json.dumps({"id": uid, "audio": f"wavs/{uid}.wav", "speaker": "george", "duration": 0.3,
                                 "sample_rate": 8000, "split": "test", "text": "zero"}))
    lines.append(json.dumps({"id": "jackson_1_9", "audio": "wavs/jackson_1_9.wav", "speaker": "jackson",
                             "duration": 0.4, "sample_rate": 8000, "split": "train", "text": "one"}))
    (data / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    write_json(data / "prepare.json", {"layout": "fsdd", "corpus_dir": "/somewhere/fsdd", "sample_rate": 8000})

    exp = tmp_path / "exp" / "fsdd"
    model = tiny_model_config()
    exp.mkdir(parents=True)
    (exp / "config.yaml").write_text(yaml.safe_dump({
        "model": model, "train": {"max_steps": 2600, "max_minutes": 30, "batch_size": 8, "crop_seconds": 0.5},
        "data": {"manifest": str(data / "manifest.jsonl")}, "device": "auto", "seed": 0}))
    (exp / "overrides.yaml").write_text(yaml.safe_dump(["model=tiny", "train=short",
                                                        f"data.manifest={data / 'manifest.jsonl'}"]))
    (exp / "speakers.txt").write_text("\n".join(SPEAKERS) + "\n")
    write_json(exp / "train_summary.json", {"step": 2234, "minutes": 30.0, "valid_bits_per_sample": 4.88,
                                            "valid_perplexity": 102.7, "valid_codes_used": 128,
                                            "valid_utterances": 50, "valid_seconds": 24.5, "new_key": 7,
                                            "parameters": 123456})
    write_json(exp / "metrics.json", {"split": "test", "manifest": "m.jsonl", "bits_per_sample": 4.62,
                                      "perplexity": 110.6, "codes_used": 128, "utterances": 200, "seconds": 95.1})
    (exp / ".stages").mkdir()
    (exp / ".stages" / "2").write_text("1806 s\ttrain the VQ-VAE (tiny)\n")

    for name, acc, base in (("vqvae", 0.493, True), ("mfcc-kmeans", 0.351, False)):
        write_json(exp / "probe" / f"{name}.json", probe_record(name, acc, base))
        for plot in ("code_usage", "code_phone", "phone_accuracy"):
            write_png(exp / "probe" / f"{name}_{plot}.png")

    items = []
    for i, uid in enumerate(UTTS):
        for kind in ("original", "reconstruction", "conversion"):
            write_wav(exp / "eval_convert" / kind / f"{uid}.wav", 200 + 100 * i)
        write_png(exp / "eval_convert" / "spectrograms" / f"{uid}.png")
        items.append({"id": uid, "source_speaker": "george" if i == 0 else EVIL, "target_speaker": "jackson",
                      "text": "zero" if i == 0 else "Tom & <b>Jerry</b>",
                      "original": f"original/{uid}.wav", "reconstruction": f"reconstruction/{uid}.wav",
                      "conversion": f"conversion/{uid}.wav", "spectrogram": f"spectrograms/{uid}.png",
                      "speaker_similarity": {k: {"source": 0.8, "target": 0.4} for k in KINDS},
                      "conversion_closer_to_target": i == 0, "reference_words": 1,
                      "transcripts": {k: "zero" if i == 0 else "<i>oh</i>" for k in KINDS},
                      "word_errors": {k: i for k in KINDS}, "mcd": {"reconstruction": 6.1, "conversion": 9.9},
                      "future_item_score": 0.25})
    write_json(exp / "eval_convert" / "metrics.json", {   # as `vqspeech evaluate conversion` writes it
        "summary": {
            "model": "/x/last.pt", "exp_dir": "/x", "manifest": "/x/m.jsonl", "split": "test", "sample_rate": 8000,
            "seed": 0, "num_items": 2, "num_requested": 20, "skipped": [], "speakers": ["george"],
            "targets": ["jackson"], "reference": {"split": "train", "num_per_speaker": {"george": 10}},
            "speaker_similarity": {"original": {"source": 0.91, "target": 0.52},
                                   "reconstruction": {"source": 0.83, "target": 0.55},
                                   "conversion": {"source": 0.61, "target": 0.74}},
            "conversion_speaker_accuracy": 0.9, "num_conversions_scored": 2,
            "recognition": {"unit": "digit", "engine": "pocketsphinx en-us", "num_scored": 2,
                            "error_rate": {"original": 0.1, "reconstruction": 0.3, "conversion": 0.45}},
            "mcd": {"reconstruction": 6.2, "conversion": 9.8, "conversion_note": "not a quality measure"},
            "timing_seconds": {"total": 12.0}, "unknown_count": 3},
        "items": items})

    for speaker in ("jackson", "lucas"):
        folder = exp / "prior_samples" / speaker
        for j in range(2):
            write_wav(folder / f"sample_{j:02d}.wav", 500 + 100 * j)
        write_json(folder / "samples.json", {
            "speaker": speaker if speaker == "jackson" else EVIL, "seconds": 0.3, "num": 2, "candidates": 4,
            "temperature": 1.0, "kept_bits_per_code": [2.34, 2.46], "samples_codes_used": 72,
            "data_codes_used": 128, "wavs": [f"exp/fsdd/prior_samples/{speaker}/sample_{j:02d}.wav"
                                              for j in range(2)]})
    return exp


class Media(HTMLParser):
    """Collects <img>/<audio> sources and the <body> attributes of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.images, self.audios, self.body = [], [], {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src"))
        elif tag == "audio":
            self.audios.append(attrs.get("src"))
        elif tag == "body":
            self.body = attrs


# --- the page itself -----------------------------------------------------------------------------


def test_sections_tables_and_relative_links(exp):
    write_json(exp / "probe" / "settings.json", {"seed": 0})   # not a system: no column
    out = write_report(exp)
    assert out == exp / "report.html"
    text = out.read_text()
    for section in ("summary", "metrics", "probe", "conversion", "prior", "attribution"):
        assert f'<section id="{section}">' in text
    assert "tiny" in text and "2,234" in text and "4.620" in text   # model name, steps, test bits/sample
    assert "<tr><th>Parameters</th><td>123,456 (0.12 M)</td></tr>" in text   # from train_summary.json
    assert "Phone classes" in text and "12,345" in text                      # the probe's count keys
    # One probe table: both systems and both baselines side by side, directions marked.
    for column in ("VQ-VAE codes", "MFCC k-means", "Random codes", "Majority phone"):
        assert column in text
    assert "49.3%" in text and "7.2%" in text
    row = re.search(r"<tr><th>ABX error, within speaker <span.*?</tr>", text).group(0)
    assert "lower is better" in row
    assert "Some future metric" in text                         # unknown keys are shown, not fatal
    assert "settings" not in text.split('<section id="probe">')[1].split("</section>")[0]
    conversion = text.split('<section id="conversion">')[1].split("</section>")[0]
    assert "Digit error rate (pocketsphinx en-us)" in conversion and "0.450" in conversion
    assert "Conversions closer to the target speaker" in conversion and "Unknown count" in conversion
    assert "heard: \u201c&lt;i&gt;oh&lt;/i&gt;\u201d (1 error in 1 word)" in conversion
    assert "MCD 9.900 dB" in conversion and "Future item score: 0.250" in conversion
    assert "Tom &amp; &lt;b&gt;Jerry&lt;/b&gt;" in text
    # No "Training" note: the summary exists; no missing-file notes anywhere.
    assert 'class="note"' not in text

    media = Media(text)
    assert len(media.images) == 6 + 2 and len(media.audios) == 6 + 4
    for src in media.images + media.audios:
        assert not src.startswith(("/", "file:", "http")), src
        assert (exp / unquote(src)).is_file(), src
    assert "<link" not in text and "http://" not in text.split("<section id=\"attribution\">")[0]


def test_best_value_is_marked_among_systems_only(exp):
    """A degenerate baseline (one code: cluster purity 1) is a reference, never the bold best."""
    text = write_report(exp).read_text()
    row = re.search(r"<tr><th>Cluster purity.*?</tr>", text).group(0)
    cells = re.findall(r'<td class="([^"]*)">', row)  # VQ-VAE, MFCC k-means, random codes, majority phone
    assert len(cells) == 4 and "best" in cells[0] + cells[1]
    assert "best" not in cells[2] + cells[3] and "100.0%" in row


def test_report_does_not_replace_other_files(exp, tmp_path, capsys):
    from conftest import run_cli

    other = tmp_path / "notes.html"
    other.write_text("my notes")
    assert run_cli(["report", exp, "--out", other]) == 2
    assert "--overwrite" in capsys.readouterr().err and other.read_text() == "my notes"
    write_report(exp)
    write_report(exp)  # its own report is rebuilt without --overwrite
    assert run_cli(["report", exp, "--out", other, "--overwrite"]) == 0 and "vqspeech report" in other.read_text()


def test_report_elsewhere_links_relative_to_it(exp, tmp_path):
    out = write_report(exp, tmp_path / "site" / "page.html")
    media = Media(out.read_text())
    assert media.audios and all((out.parent / unquote(s)).is_file() for s in media.images + media.audios)
    assert all(s.startswith("../exp/fsdd/") for s in media.audios)


def test_escapes_untrusted_text(exp):
    text = write_report(exp).read_text()
    assert "<script>alert" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    assert text.count("<script>") == 1                       # the page's own media check


def test_missing_and_malformed_files_leave_notes(exp):
    (exp / "probe" / "mfcc-kmeans.json").write_text("{not json")
    (exp / "probe" / "vqvae.json").unlink()
    (exp / "metrics.json").unlink()
    write_json(exp / "eval_convert" / "metrics.json", {"summary": [1, 2], "items": "nonsense"})
    write_json(exp / "prior_samples" / "lucas" / "samples.json", ["not", "a", "dict"])
    (exp / "prior_samples" / "jackson" / "sample_01.wav").unlink()
    text = write_report(exp).read_text()
    assert '<span class="missing">missing: prior_samples/jackson/sample_01.wav</span>' in text
    assert "probe/vqvae.json is missing" in text
    assert "Skipped mfcc-kmeans: cannot read" in text and "No probe results to show" in text
    assert "No test metrics: metrics.json is missing" in text and "vqspeech evaluate" in text
    assert "eval_convert/metrics.json has no summary" in text and "lists no items" in text
    assert "Skipped lucas" in text and "sample_00" in text     # jackson's samples still shown

    shutil.rmtree(exp / "probe")
    shutil.rmtree(exp / "prior_samples")
    (exp / "train_summary.json").write_text("[]")
    (exp / "config.yaml").write_text(yaml.safe_dump({"model": "oops", "data": {"manifest": 3}}))
    text = write_report(exp).read_text()
    assert "No phoneme probe yet" in text and "No prior samples" in text
    assert "does not hold a JSON object" in text
    assert "<th>Parameters</th>" not in text                 # no count recorded: no row


def test_unknown_conversion_summary_keys_get_readable_labels(exp):
    """A key a newer `evaluate conversion` adds still shows, with a label made from its name."""
    path = exp / "eval_convert" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["summary"]["new_one"] = 2
    write_json(path, metrics)
    conversion = write_report(exp).read_text().split('<section id="conversion">')[1].split("</section>")[0]
    assert "New one" in conversion and "Section skipped" not in conversion


def test_convert_folder_shown_without_conversion_evaluation(exp):
    shutil.rmtree(exp / "eval_convert")
    for target in ("jackson", "lucas"):
        for uid in UTTS:
            write_wav(exp / "convert" / target / f"{uid}.wav")
    text = write_report(exp).read_text()
    assert "No conversion evaluation" in text and "Conversions (recipe stage 4)" in text
    media = Media(text)
    assert "../../data/fsdd/prepared/wavs/george_0_0.wav" in media.audios   # the original, via the manifest
    assert sum(s.startswith("convert/") for s in media.audios) == 4


@pytest.mark.parametrize("layout, expected", [
    ("fsdd", "CC BY-SA 4.0"), ("vctk", "CC BY 4.0"), ("librispeech", "openslr.org/12"),
    ("libritts", "openslr.org/60"), ("timit", "must not be redistributed"), ("demo", "espeak-ng"),
    ("folder", "Your own data"), ("something_new", "Data source not identified")])
def test_attribution(exp, layout, expected):
    prepare = exp.parents[1] / "data" / "fsdd" / "prepared" / "prepare.json"
    write_json(prepare, {"layout": layout, "corpus_dir": "/c"})
    text = write_report(exp).read_text()
    attribution = text.split('<section id="attribution">')[1]
    assert expected in attribution
    assert "pocketsphinx" in attribution and "Resemblyzer" in attribution
    assert "derive from it" in attribution
    header = text.split("</header>")[0]
    assert ("must not be redistributed" in header) == (layout == "timit")   # TIMIT: warned at the top too


def test_not_an_experiment(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        write_report(tmp_path / "nope")
    with pytest.raises(UserError, match="no config.yaml"):
        write_report(tmp_path)


# --- in a real browser ---------------------------------------------------------------------------


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            try:
                subprocess.run([path, "--version"], capture_output=True, timeout=60, check=True)
            except (OSError, subprocess.SubprocessError):
                continue  # e.g. a snap stub without snap
            return path
    pytest.skip("no usable chromium (Debian: apt-get install chromium)")


def browser_verdict(page: Path, profile: Path) -> tuple[dict, Media]:
    """Load the page in headless Chromium; the <body> attributes its media check wrote, and its source."""
    cmd = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
           f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    dom = Media(result.stdout)
    assert dom.body, f"chromium printed no DOM (exit {result.returncode}): {result.stderr[-2000:]}"
    return dom.body, Media(page.read_text())


def test_all_media_load_in_chromium(exp, tmp_path):
    body, source = browser_verdict(write_report(exp), tmp_path / "profile")
    total = len(source.images) + len(source.audios)
    assert len(source.images) > 0 and len(source.audios) > 0
    assert body.get("data-media-checked") == "true", body
    assert body.get("data-media-failed") == "0", body
    assert body.get("data-media-ok") == str(total), body


@pytest.mark.parametrize("broken", ["eval_convert/conversion/george_0_1.wav", "probe/vqvae_code_phone.png"])
def test_chromium_reports_a_broken_link(exp, tmp_path, broken):
    page = write_report(exp)
    (exp / broken).unlink()
    body, source = browser_verdict(page, tmp_path / "profile")
    total = len(source.images) + len(source.audios)
    assert body.get("data-media-checked") == "true", body
    assert body.get("data-media-failed") == "1", body
    assert body.get("data-media-ok") == str(total - 1), body


def test_a_conv_decoder_experiment_is_described_as_one(exp):
    cfg = yaml.safe_load((exp / "config.yaml").read_text())
    cfg["model"].update(decoder_type="conv", conv_decoder={"channels": 128, "upsample_strides": [5, 4, 4]})
    (exp / "config.yaml").write_text(yaml.safe_dump(cfg))
    write_json(exp / "metrics.json", {"split": "test", "mel_loss": 1.23, "perplexity": 50.0, "codes_used": 90})
    text = write_report(exp).read_text()
    assert "adversarially trained convolutional decoder" in text and "WaveNet" not in text
    assert "Multi-scale log-mel L1 of the decoded audio" in text and "Teacher-forced" not in text


def test_media_linked_out_of_the_experiment_are_left_out(exp, tmp_path):
    """Prior samples and plain conversions are played only from their own folders: a link in them to
    another file (an edited or hostile folder) made the page play it."""
    outside = tmp_path / "outside.wav"
    write_wav(outside)
    sample = exp / "prior_samples" / "jackson" / "sample_00.wav"
    sample.unlink()
    sample.symlink_to(outside)
    shutil.rmtree(exp / "eval_convert")
    for uid in UTTS:
        write_wav(exp / "convert" / "jackson" / f"{uid}.wav")
    converted = exp / "convert" / "jackson" / f"{UTTS[0]}.wav"
    converted.unlink()
    converted.symlink_to(outside)
    text = write_report(exp).read_text()
    audios = Media(text).audios
    assert "prior_samples/jackson/sample_01.wav" in audios and f"convert/jackson/{UTTS[1]}.wav" in audios
    assert "prior_samples/jackson/sample_00.wav" not in audios and f"convert/jackson/{UTTS[0]}.wav" not in audios
    assert "left out: sample_00.wav is not in jackson/" in text and f"left out: {UTTS[0]}.wav" in text


def test_prior_samples_of_another_prior_or_an_earlier_state_are_named(exp):
    """The page summarises EXP/prior; samples drawn from it at another step, or from another prior,
    were shown under it as its own."""
    import torch

    from vqspeech.checkpoint import FORMAT_VERSION
    from vqspeech.fileio import file_digest

    prior = exp / "prior" / "checkpoints" / "last.pt"
    prior.parent.mkdir(parents=True)
    torch.save({"format_version": FORMAT_VERSION, "kind": "prior", "step": 40, "speakers": SPEAKERS}, prior)
    path = exp / "prior_samples" / "jackson" / "samples.json"
    record = json.loads(path.read_text())

    def section(**fields) -> str:
        write_json(path, {**record, **fields})
        return write_report(exp).read_text().split("<h3>Speaker jackson</h3>")[1].split("<h3>")[0]

    current = {"prior_step": 40, "prior_digest": file_digest(prior)}
    assert "drawn from" not in section(**current)
    assert "drawn from a prior at step 20, but the prior in" in section(prior_step=20, prior_digest="0" * 16)
    text = section(prior_step=40, prior_digest="0" * 16, prior="/elsewhere/prior2/checkpoints/last.pt")
    assert "drawn from another prior (/elsewhere/prior2/checkpoints/last.pt) than" in text
    assert "drawn from" not in section()  # samples that recorded neither: nothing to compare


def test_an_out_that_is_no_file_is_refused_and_odd_bytes_skip_only_their_file(exp, tmp_path):
    import os

    fifo = tmp_path / "pipe.html"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="exists and is not a file"):
        write_report(exp, fifo)  # it was replaced by a file
    assert fifo.is_fifo()
    (exp / "speakers.txt").write_bytes(b"\xff\xfe george\n")
    (exp / ".stages" / "2").write_bytes(b"\xff 1806 s\n")
    text = write_report(exp).read_text()
    assert "Section skipped" not in text and "Parameters" in text  # the summary stays, without those files


def test_the_data_table_says_when_the_manifest_lists_other_training_data(exp):
    """Prepared again after training (more speakers, more utterances): the Data table showed the new
    counts as the experiment's data, with no note."""
    import torch

    from vqspeech.checkpoint import FORMAT_VERSION

    last = exp / "checkpoints" / "last.pt"
    last.parent.mkdir()

    def summary(train: int, speakers: list[str]) -> str:
        torch.save({"format_version": FORMAT_VERSION, "kind": "vqvae", "step": 2234, "speakers": speakers,
                    "data": {"train": train, "valid": 0, "digest": "0" * 16}}, last)
        return write_report(exp).read_text().split('<section id="summary">')[1].split("</section>")[0]

    assert "the counts below are the manifest" not in summary(1, ["jackson"])  # the manifest's one train row
    text = summary(34, ["george", "jackson"])
    assert "The model trained on 34 utterances of 2 speakers; the manifest lists 1 training utterances of 1" in text
    assert "the counts below are the manifest" in summary(1, ["george"])


def test_probe_systems_scored_on_different_data_are_not_ranked(exp):
    def probe_section():
        text = write_report(exp).read_text()
        return text.split('<section id="probe">')[1].split("</section>")[0]

    for name in ("vqvae", "mfcc-kmeans"):  # the same split and utterances: ranked under one scope
        record = json.loads((exp / "probe" / f"{name}.json").read_text())
        write_json(exp / "probe" / f"{name}.json", {**record, "split": "test", "num_utterances": 200})
    section = probe_section()
    assert 'class="num best"' in section and "on the test split, 200 utterances." in section
    assert "different data" not in section

    record = json.loads((exp / "probe" / "mfcc-kmeans.json").read_text())
    write_json(exp / "probe" / "mfcc-kmeans.json", {**record, "split": None})  # every split: trained-on data too
    section = probe_section()
    assert "best" not in section and "scored on different data" in section
    head = section.split("<tr><th>Metric</th>")[1].split("</tr>")[0]
    assert head.count("the test split, 200 utterances") == 3   # the codes and the baselines they came with
    assert head.count("all splits (also the utterances the models were trained on), 200 utterances") == 1
