"""`vqspeech report EXP_DIR`: one self-contained HTML page about an experiment, like a paper's demo page.

The page (default ``EXP_DIR/report.html``) shows the experiment summary, the metric tables, the
plots, audio players and the data sources' attributions. It links the experiment's files by
relative paths (nothing is copied), needs no network (inline CSS, no external resources) and
carries one small inline script that checks every ``<img>`` and ``<audio>`` once the page has
loaded: it shows a banner when some fail and records the verdict in ``<body data-media-*>``.

Every section reads its own files; a missing or unreadable file leaves a short note saying which
recipe stage or command writes it, never an exception. Only a missing experiment folder (or one
without ``config.yaml``) is an error.
"""

from __future__ import annotations

import datetime
import functools
import html
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import yaml

from .errors import UserError, first_line
from .fileio import write_text_atomic

# Which recipe stage / command writes each input (shown when it is missing).
GENERATOR = "vqspeech report"
"""The page's <meta name="generator">: marks a file the report may replace without --overwrite."""

PRODUCERS = {
    "train_summary": "recipe stage 2 (`vqspeech train EXP_DIR ...`)",
    "metrics": "recipe stage 8 (`vqspeech evaluate EXP_DIR --split test --out EXP_DIR/metrics.json`)",
    "probe": "recipe stage 8 (`vqspeech probe --codes EXP_DIR/codes --manifest M --name vqvae "
             "--out EXP_DIR/probe/vqvae.json`; the baseline: `vqspeech baseline mfcc-kmeans`, then "
             "`vqspeech probe ... --name mfcc-kmeans`)",
    "eval_convert": "recipe stage 8 (`vqspeech eval convert EXP_DIR`)",
    "convert": "recipe stage 4 (`vqspeech convert EXP_DIR MANIFEST --speaker S -o EXP_DIR/convert/S`)",
    "prior_samples": "recipe stages 6-7 (`vqspeech prior train`, then "
                     "`vqspeech prior sample EXP_DIR/prior --speaker S -o EXP_DIR/prior_samples/S`)",
    "prepare": "recipe stage 1 (`vqspeech prepare CORPUS OUT --layout NAME`)",
}

# --- labels: (label, direction) where direction is "up", "down" or "" ------------------------------

TRAIN_LABELS = {
    "step": ("Training steps", ""),
    "minutes": ("Training time (minutes)", ""),
    "valid_bits_per_sample": ("Validation cross-entropy (bits per sample)", "down"),
    "valid_mel_loss": ("Validation multi-scale log-mel L1", "down"),
    "valid_perplexity": ("Validation codebook perplexity", "up"),
    "valid_codes_used": ("Validation codes used", "up"),
    "valid_utterances": ("Validation utterances", ""),
    "valid_seconds": ("Validation audio (s)", ""),
}
METRIC_LABELS = {
    "bits_per_sample": ("Cross-entropy, teacher forced (bits per sample)", "down"),
    "mel_loss": ("Multi-scale log-mel L1 of the decoded audio", "down"),
    "perplexity": ("Codebook perplexity", "up"),
    "codes_used": ("Codes used", "up"),
    "utterances": ("Utterances", ""),
    "seconds": ("Audio (s)", ""),
}
# Probe rows: key -> (label, direction, kind). kind "pct": a fraction shown as a percentage.
PROBE_ROWS = {
    "accuracy": ("Frame phone accuracy (held-out code \u2192 phone mapping)", "up", "pct"),
    "pnmi": ("Phone-normalised mutual information (PNMI)", "up", "num"),
    "phone_purity": ("Phone purity (the mapping scored on its own frames)", "up", "pct"),
    "cluster_purity": ("Cluster purity (frames whose code is their phone's most frequent)", "up", "pct"),
    "abx_within": ("ABX error, within speaker", "down", "pct"),
    "abx_across": ("ABX error, across speakers", "down", "pct"),
    "abx_within_triphone": ("ABX error, within speaker (triphones)", "down", "pct"),
    "abx_across_triphone": ("ABX error, across speakers (triphones)", "down", "pct"),
    "abx_within_latents": ("ABX error, within speaker (continuous features)", "down", "pct"),
    "abx_across_latents": ("ABX error, across speakers (continuous features)", "down", "pct"),
    "abx_within_triphone_latents": ("ABX error, within speaker, triphones (continuous features)", "down", "pct"),
    "abx_across_triphone_latents": ("ABX error, across speakers, triphones (continuous features)", "down", "pct"),
    "linear_probe_accuracy": ("Linear probe phone accuracy (continuous features)", "up", "pct"),
    "speaker_id_acc": ("Speaker-ID accuracy from the units (lower: less speaker information)", "down", "pct"),
    "speaker_id_acc_input": ("Speaker-ID accuracy from the input features (reference)", "", "pct"),
    "speaker_id_chance": ("Speaker-ID chance level (largest speaker's share)", "", "pct"),
    "codes_used": ("Codes used", "", "int"),
    "K": ("Codebook size K", "", "int"),
    "n_phone_classes": ("Phone classes", "", "int"),
    "n_frames": ("Frames scored", "", "int"),
    "n_utterances": ("Utterances", "", "int"),
    "n_speakers": ("Speakers", "", "int"),
    "code_rate_hz": ("Code rate (Hz)", "", "num"),
    "n_items": ("ABX items", "", "int"),
    "n_items_triphone": ("ABX items (triphones)", "", "int"),
}
PROBE_SYSTEMS = {"vqvae": "VQ-VAE codes", "mfcc-kmeans": "MFCC k-means"}
PROBE_BASELINES = {"random_codes": "Random codes", "majority_phone": "Majority phone"}
PLOT_LABELS = {"code_usage": "code usage", "code_phone": "codes vs phones",
               "phone_accuracy": "accuracy per phone"}
CONVERT_LABELS = {
    "conversion_speaker_accuracy": ("Conversions closer to the target speaker than to the source", "up"),
    "num_conversions_scored": ("Conversions scored", ""),
    "num_requested": ("Utterances requested", ""),
    "num_items": ("Utterances evaluated", ""),
    "sample_rate": ("Sample rate (Hz)", ""),
    "seed": ("Seed", ""),
    "items": ("Items", ""),
    "n_items": ("Items", ""),
    "utterances": ("Utterances", ""),
    "speakers": ("Speakers", ""),
    "seconds": ("Audio (s)", ""),
}
ARROWS = {"up": ("\u2191", "higher is better"), "down": ("\u2193", "lower is better")}

# Known corpora (prepare.json "layout"): what to credit and under which terms.
CORPORA: dict[str, dict[str, str]] = {
    "fsdd": {
        "name": "Free Spoken Digit Dataset (FSDD)",
        "credit": "Z. Jackson, C. Souza, J. Flaks, Y. Pan, H. Nicolas and A. Thite",
        "licence": "CC BY-SA 4.0 (Creative Commons Attribution-ShareAlike 4.0)",
        "url": "https://github.com/Jakobovski/free-spoken-digit-dataset",
        "terms": "Share-alike: audio derived from it (reconstructions, conversions, samples) may be "
                 "shared under CC BY-SA 4.0 with this attribution.",
    },
    "vctk": {
        "name": "CSTR VCTK Corpus, version 0.92",
        "credit": "J. Yamagishi, C. Veaux and K. MacDonald, Centre for Speech Technology Research (CSTR), "
                  "University of Edinburgh",
        "licence": "CC BY 4.0 (Creative Commons Attribution 4.0); the older 0.80 release: ODC-By 1.0",
        "url": "https://doi.org/10.7488/ds/2645",
        "terms": "Attribution required when sharing the audio or audio derived from it.",
    },
    "librispeech": {
        "name": "LibriSpeech ASR corpus",
        "credit": "V. Panayotov, G. Chen, D. Povey and S. Khudanpur, \u201cLibrispeech: an ASR corpus based on "
                  "public domain audio books\u201d, ICASSP 2015 (recordings from LibriVox)",
        "licence": "CC BY 4.0 (Creative Commons Attribution 4.0)",
        "url": "https://www.openslr.org/12",
        "terms": "Attribution required when sharing the audio or audio derived from it.",
    },
    "libritts": {
        "name": "LibriTTS corpus",
        "credit": "H. Zen, V. Dang, R. Clark, Y. Zhang, R. J. Weiss, Y. Jia, Z. Chen and Y. Wu, \u201cLibriTTS: "
                  "a corpus derived from LibriSpeech for text-to-speech\u201d, Interspeech 2019",
        "licence": "CC BY 4.0 (Creative Commons Attribution 4.0)",
        "url": "https://www.openslr.org/60",
        "terms": "Attribution required when sharing the audio or audio derived from it.",
    },
    "timit": {
        "name": "TIMIT Acoustic-Phonetic Continuous Speech Corpus (LDC93S1)",
        "credit": "J. S. Garofolo, L. F. Lamel, W. M. Fisher, J. G. Fiscus, D. S. Pallett, N. L. Dahlgren and "
                  "V. Zue, Linguistic Data Consortium, 1993",
        "licence": "LDC User Agreement (licensed to LDC members and licensees; not an open licence)",
        "url": "https://catalog.ldc.upenn.edu/LDC93S1",
        "terms": "The audio must not be redistributed: do not publish this page with its audio (originals, "
                 "reconstructions, conversions or samples) outside the licensee's organisation.",
    },
    "demo": {
        "name": "vqspeech demo corpus (synthetic speech)",
        "credit": "synthesised by `vqspeech demo-data` with the espeak-ng speech engine",
        "licence": "espeak-ng engine: GPL-3.0-or-later; the synthetic audio itself is produced by this toolkit",
        "url": "https://github.com/espeak-ng/espeak-ng",
        "terms": "No third-party recordings are involved.",
    },
    "folder": {
        "name": "Your own data (a folder of audio files)",
        "credit": "unknown: add the recordings' authors here before sharing",
        "licence": "unknown: whatever terms apply to your recordings",
        "url": "",
        "terms": "Check that you may share the recordings before publishing this page with its audio.",
    },
}
TOOLS = [
    ("VQ-VAE", "A. van den Oord, O. Vinyals and K. Kavukcuoglu, \u201cNeural Discrete Representation "
     "Learning\u201d, NeurIPS 2017", "the method this toolkit implements", "https://arxiv.org/abs/1711.00937"),
    ("pocketsphinx", "CMU Sphinx (D. Huggins-Daines et al.), BSD-style licence, with its US English models",
     "phone alignments for the probe; speech recognition for the word error rates",
     "https://github.com/cmusphinx/pocketsphinx"),
    ("Resemblyzer", "Resemble AI (C. Jemine), Apache-2.0, a GE2E speaker encoder (Wan et al., 2018)",
     "speaker embeddings for the speaker similarity of conversions", "https://github.com/resemble-ai/Resemblyzer"),
]

CSS = """
:root { --fg: #1d1d1f; --muted: #5f6368; --line: #d9dce1; --head: #f3f4f6; --accent: #1a5fb4;
        --note: #fff8e1; --bad: #b3261e; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); margin: 0 auto; max-width: 1180px; padding: 0 1.2rem 3rem; }
header { text-align: center; padding: 2rem 0 1rem; border-bottom: 1px solid var(--line); }
header h1 { margin: 0 0 .3rem; font-size: 1.8rem; }
header p { margin: .2rem 0; color: var(--muted); }
nav { text-align: center; margin: .8rem 0; font-size: .9rem; }
nav a { margin: 0 .5rem; }
a { color: var(--accent); }
h2 { margin-top: 2.2rem; padding-bottom: .2rem; border-bottom: 1px solid var(--line); }
h3 { margin-top: 1.4rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .92rem; }
th, td { border: 1px solid var(--line); padding: .3rem .6rem; vertical-align: top; text-align: left; }
th { background: var(--head); }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.best { font-weight: 600; }
.arrow { color: var(--muted); font-size: .85rem; white-space: nowrap; }
.note { background: var(--note); border-left: 4px solid #f0b400; padding: .4rem .7rem; margin: .6rem 0; }
.muted, .small { color: var(--muted); font-size: .85rem; }
.missing { color: var(--bad); font-size: .85rem; }
audio { width: 190px; height: 36px; display: block; }
table.demo td { min-width: 140px; }
table.demo img { max-width: 280px; height: auto; display: block; }
figure { display: inline-block; margin: .5rem 1rem .5rem 0; vertical-align: top; }
figure img { max-width: 540px; width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: .85rem; text-align: center; }
code { background: var(--head); padding: 0 .25rem; border-radius: 3px; font-size: .88em; }
#media-banner { display: none; position: sticky; top: 0; z-index: 10; background: var(--bad); color: #fff;
                padding: .5rem 1rem; font-weight: 600; }
footer { margin-top: 3rem; color: var(--muted); font-size: .85rem; border-top: 1px solid var(--line);
         padding-top: .8rem; }
"""

# After load: each <img> (complete && naturalWidth > 0) and <audio> (readyState >= HAVE_METADATA,
# 'loadedmetadata' or 'error'). Writes data-media-{total,ok,failed,checked} on <body> and shows a
# banner naming the failures. A file:// page cannot fetch() its neighbours, so media events it is.
SCRIPT = """
(function () {
  function run() {
    var body = document.body, banner = document.getElementById('media-banner');
    var media = Array.prototype.slice.call(document.querySelectorAll('img, audio'));
    var state = [], ok = 0, failed = 0, failedNames = [];
    function update() {
      body.dataset.mediaTotal = String(media.length);
      body.dataset.mediaOk = String(ok);
      body.dataset.mediaFailed = String(failed);
      body.dataset.mediaChecked = (ok + failed === media.length) ? 'true' : 'false';
      if (failed > 0) {
        banner.textContent = failed + ' of ' + media.length + ' media files failed to load: ' +
          failedNames.join(', ');
        banner.style.display = 'block';
      }
    }
    function settle(i, good) {
      if (state[i] !== undefined) return;
      state[i] = good;
      if (good) { ok += 1; } else { failed += 1; failedNames.push(media[i].getAttribute('src')); }
      update();
    }
    media.forEach(function (el, i) {
      if (el.tagName === 'IMG') {
        if (el.complete) { settle(i, el.naturalWidth > 0); return; }
        el.addEventListener('load', function () { settle(i, el.naturalWidth > 0); });
        el.addEventListener('error', function () { settle(i, false); });
      } else {
        if (el.error) { settle(i, false); return; }
        if (el.readyState >= 1) { settle(i, true); return; }
        el.addEventListener('loadedmetadata', function () { settle(i, true); });
        el.addEventListener('error', function () { settle(i, false); });
      }
    });
    update();
  }
  if (document.readyState === 'complete') { run(); } else { window.addEventListener('load', run); }
})();
"""

# --- small helpers -------------------------------------------------------------------------------


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


class SectionError(Exception):
    """A section cannot be shown; its message becomes the note in its place."""


def read_json(path: Path, name: str | None = None) -> Any:
    """Parsed JSON, or SectionError naming the file (as ``name``, default its file name) and the problem."""
    name = name or path.name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SectionError(f"{name} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SectionError(f"cannot read {name} ({first_line(exc)})") from None


def read_json_dict(path: Path, name: str | None = None) -> dict:
    data = read_json(path, name)
    if not isinstance(data, dict):
        raise SectionError(f"{name or path.name} does not hold a JSON object")
    return data


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def fmt(value: Any, kind: str = "num") -> str:
    """A value for a table cell: integers as they are, floats to 3-4 significant places."""
    if value is None:
        return "\u2014"
    if not is_number(value):
        if isinstance(value, (list, dict)):
            return json.dumps(value)
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if kind == "pct" and 0 <= value <= 1:
        return f"{100 * value:.1f}%"
    if isinstance(value, int) or (kind == "int" and float(value).is_integer()):
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.3f}" if abs(value) >= 0.001 or value == 0 else f"{value:.2e}"


def label_for(key: str, labels: dict) -> tuple[str, str]:
    entry = labels.get(key)
    if entry:
        return entry[0], entry[1]
    return key.replace("_", " ").capitalize(), ""


def short_label(key: str, labels: dict) -> str:
    """The label without its parenthesis, for tight cells."""
    return re.sub(r"\s*\(.*?\)", "", label_for(key, labels)[0])


def arrow(direction: str) -> str:
    if direction not in ARROWS:
        return ""
    symbol, words = ARROWS[direction]
    return f' <span class="arrow" title="{words}">{symbol} {words}</span>'


def note(text: str) -> str:
    """A visible note; `backticked` stretches become <code>."""
    return '<p class="note">' + re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(text)) + "</p>"


def key_value_table(record: dict, labels: dict, caption: str = "") -> str:
    """Known keys first (in label order), then any other numeric or short text values."""
    keys = [k for k in labels if k in record] + [k for k in record if k not in labels]
    rows = []
    for key in keys:
        value = record[key]
        if not (is_number(value) or value is None or isinstance(value, str)):
            continue
        label, direction = label_for(key, labels)
        cell = f'<td class="num">{esc(fmt(value))}</td>' if is_number(value) else f"<td>{esc(fmt(value))}</td>"
        rows.append(f"<tr><th>{esc(label)}{arrow(direction)}</th>{cell}</tr>")
    if not rows:
        return note("No values to show.")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}{''.join(rows)}</table>"


@dataclass
class Page:
    """What every section needs: the folders, and how to link a file from the page."""

    exp_dir: Path
    out_dir: Path
    config: dict

    @functools.cached_property
    def manifest(self) -> Path | None:
        return manifest_path(self)

    @functools.cached_property
    def records(self) -> dict[str, dict]:
        return read_manifest(self.manifest)

    def url(self, path: Path) -> str:
        """The path relative to the page's folder, percent-encoded, HTML-escaped for an attribute."""
        rel = os.path.relpath(Path(path).absolute(), self.out_dir)
        return esc(quote(Path(rel).as_posix(), safe="/"))

    def audio(self, path: Path) -> str:
        if not path.is_file():
            return f'<span class="missing">missing: {esc(self.rel(path))}</span>'
        return f'<audio controls preload="metadata" src="{self.url(path)}"></audio>'

    def image(self, path: Path, alt: str, link: bool = True) -> str:
        if not path.is_file():
            return f'<span class="missing">missing: {esc(self.rel(path))}</span>'
        img = f'<img src="{self.url(path)}" alt="{esc(alt)}" loading="eager">'
        return f'<a href="{self.url(path)}">{img}</a>' if link else img

    def rel(self, path: Path) -> str:
        return os.path.relpath(Path(path).absolute(), self.out_dir)


# --- data: manifest, prepare.json ----------------------------------------------------------------


def manifest_path(page: Page) -> Path | None:
    data = page.config.get("data") if isinstance(page.config.get("data"), dict) else {}
    value = data.get("manifest") if data else None
    if not value:
        return None
    path = Path(str(value)).expanduser()
    if path.is_absolute():
        return path
    for base in (Path.cwd(), page.exp_dir, *page.exp_dir.absolute().parents):
        if (base / path).is_file():
            return base / path
    return path


def read_manifest(path: Path | None) -> dict[str, dict]:
    """id -> manifest record (malformed lines skipped); empty when unreadable."""
    records: dict[str, dict] = {}
    if path is None or not path.is_file():
        return records
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and "id" in record:
                    records[str(record["id"])] = record
    except (OSError, UnicodeDecodeError):
        return {}
    return records


def manifest_audio(manifest: Path | None, record: dict | None) -> Path | None:
    if manifest is None or not record or not record.get("audio"):
        return None
    audio = Path(str(record["audio"]))
    return audio if audio.is_absolute() else manifest.parent / audio


# --- sections ------------------------------------------------------------------------------------


def model_name(exp_dir: Path, model_cfg: dict) -> str:
    """`small`, `small + model.num_codes=256`, or a conf/model file the config matches, or `custom`."""
    overrides_file = exp_dir / "overrides.yaml"
    try:
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else None
    except (OSError, yaml.YAMLError):
        overrides = None
    if isinstance(overrides, list):
        names = [str(o).split("=", 1)[1] for o in overrides if str(o).startswith("model=")]
        extra = [str(o) for o in overrides if str(o).lstrip("+~").startswith("model.")]
        if names:
            return " + ".join([names[-1], *extra])
    try:
        from .config import config_dir

        for candidate in sorted((config_dir() / "model").glob("*.yaml")):
            if yaml.safe_load(candidate.read_text()) == model_cfg:
                return candidate.stem
    except Exception:  # noqa: BLE001 - naming the config is a nicety
        pass
    return "custom"


def count_parameters(model_cfg: dict, num_speakers: int) -> int | None:
    """The VQ-VAE's parameter count, built from its config (None when that fails)."""
    try:
        from .experiment import build_model

        model = build_model(model_cfg, max(1, num_speakers))
        return sum(p.numel() for p in model.parameters())
    except Exception:  # noqa: BLE001 - a count is a nicety; the page must not fail for it
        return None


def read_speakers(exp_dir: Path) -> list[str]:
    try:
        return [s for s in (exp_dir / "speakers.txt").read_text().split("\n") if s.strip()]
    except OSError:
        return []


def section_summary(page: Page) -> str:
    cfg = page.config
    model_cfg = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    speakers = read_speakers(page.exp_dir)
    rows: list[tuple[str, str]] = []
    rows.append(("Model config", model_name(page.exp_dir, model_cfg) if model_cfg else "(no model section)"))
    params = count_parameters(model_cfg, len(speakers)) if model_cfg else None
    if params is not None:
        rows.append(("Parameters", f"{params:,} ({params / 1e6:.2f} M)"))
    sr, hop = model_cfg.get("sample_rate"), model_cfg.get("hop_length")
    if is_number(sr):
        rows.append(("Sample rate", f"{sr:,} Hz"))
    if is_number(sr) and is_number(hop) and hop:
        rows.append(("Code rate", f"{sr / hop:g} codes per second (hop {hop} samples)"))
    if "num_codes" in model_cfg:
        rows.append(("Codebook", f"K = {model_cfg['num_codes']}, dimension {model_cfg.get('latent_dim', '?')}"))
    top = model_cfg.get("top") if isinstance(model_cfg.get("top"), dict) else {}
    if is_number(top.get("stride")) and top["stride"] > 0:
        rate = f", {sr / hop / top['stride']:g} codes per second" if is_number(sr) and is_number(hop) and hop else ""
        rows.append(("Top level (VQ-VAE-2)", f"K = {top.get('num_codes', '?')}, one code every {top['stride']} "
                                             f"codes{rate}"))
    enc = model_cfg.get("encoder") if isinstance(model_cfg.get("encoder"), dict) else {}
    if enc:
        rows.append(("Encoder", f"{enc.get('frontend', '?')} front end, {enc.get('channels', '?')} channels, "
                                f"dilations {enc.get('dilations', '?')}"))
    dec = model_cfg.get("decoder") if isinstance(model_cfg.get("decoder"), dict) else {}
    conv = model_cfg.get("conv_decoder") if isinstance(model_cfg.get("conv_decoder"), dict) else {}
    if model_cfg.get("decoder_type") == "conv":
        rows.append(("Convolutional decoder (adversarial)",
                     f"{conv.get('channels', '?')} channels, upsampling strides {conv.get('upsample_strides', '?')}"))
    elif dec:
        rows.append(("WaveNet decoder", f"{dec.get('layers', '?')} layers in {dec.get('cycles', '?')} cycles, "
                                        f"residual/gate/skip {dec.get('residual_channels', '?')}/"
                                        f"{dec.get('gate_channels', '?')}/{dec.get('skip_channels', '?')}"))
    if speakers:
        shown = ", ".join(speakers[:12]) + (f", \u2026 ({len(speakers)} in all)" if len(speakers) > 12 else "")
        rows.append(("Speakers the model knows", shown))
    train_cfg = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}

    parts = ["<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows) + "</table>"]

    parts.append("<h3>Training</h3>")
    try:
        summary = read_json_dict(page.exp_dir / "train_summary.json")
        if train_cfg:
            budget = []
            if train_cfg.get("max_steps"):
                budget.append(f"schedule of {train_cfg['max_steps']} steps")
            if train_cfg.get("max_minutes"):
                budget.append(f"budget of {train_cfg['max_minutes']} minutes")
            if train_cfg.get("batch_size"):
                budget.append(f"batch {train_cfg['batch_size']} x {train_cfg.get('crop_seconds', '?')} s crops")
            if budget:
                parts.append(f'<p class="small">{esc("; ".join(budget))}.</p>')
        parts.append(key_value_table(summary, TRAIN_LABELS))
    except SectionError as exc:
        parts.append(note(f"No training summary: {exc}; written by {PRODUCERS['train_summary']}."))

    parts.append("<h3>Data</h3>")
    parts.append(data_table(page))

    prior = page.exp_dir / "prior" / "train_summary.json"
    if prior.is_file():
        parts.append("<h3>Prior over the codes</h3>")
        try:
            parts.append(key_value_table(read_json_dict(prior), {
                "arch": ("Architecture", ""), "parameters": ("Parameters", ""), "step": ("Training steps", ""),
                "minutes": ("Training time (minutes)", ""),
                "valid_bits_per_code": ("Validation bits per code", "down"),
                "valid_unigram_bits_per_code": ("Unigram baseline, bits per code", ""),
                "best_valid_bits_per_code": ("Best validation bits per code", "down"),
                "best_step": ("Best step", "")}))
        except SectionError as exc:
            parts.append(note(f"Prior summary unreadable: {exc}."))

    stages = stage_table(page.exp_dir)
    if stages:
        parts.append("<h3>Recipe stages run</h3>" + stages)
    return "".join(parts)


def data_table(page: Page) -> str:
    manifest = page.manifest
    if manifest is None:
        return note("The config names no data.manifest.")
    rows = [("Manifest", str(manifest))]
    layout, prepare = corpus_layout(manifest)
    if prepare:
        rows.append(("Corpus", f"{CORPORA.get(layout, {}).get('name', layout)} (layout {layout})"))
        if prepare.get("corpus_dir"):
            rows.append(("Corpus folder", str(prepare["corpus_dir"])))
        if prepare.get("sample_rate"):
            rows.append(("Prepared at", f"{prepare['sample_rate']} Hz"))
    records = page.records
    if records:
        splits: dict[str, list[float]] = {}
        speakers = set()
        for r in records.values():
            split = str(r.get("split", "?"))
            splits.setdefault(split, [0, 0.0])
            splits[split][0] += 1
            splits[split][1] += float(r["duration"]) if is_number(r.get("duration")) else 0.0
            speakers.add(str(r.get("speaker", "?")))
        order = ["train", "valid", "test"]
        for split in sorted(splits, key=lambda s: (order.index(s) if s in order else 9, s)):
            n, secs = splits[split]
            rows.append((f"{split} split", f"{n:,} utterances, {secs / 60:.1f} minutes"))
        rows.append(("Speakers in the manifest", f"{len(speakers):,}"))
    elif not manifest.is_file():
        rows.append(("Note", "the manifest is not on this machine; counts not shown"))
    return "<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows) + "</table>"


def corpus_layout(manifest: Path | None) -> tuple[str | None, dict]:
    """(layout, prepare.json) for the manifest's folder; (None, {}) when unknown."""
    if manifest is None:
        return None, {}
    try:
        prepare = read_json_dict(manifest.parent / "prepare.json")
    except SectionError:
        return None, {}
    layout = prepare.get("layout")
    return (str(layout) if layout else None), prepare


def stage_table(exp_dir: Path) -> str:
    markers = []
    for marker in (exp_dir / ".stages").glob("*"):
        if marker.name.isdigit():
            try:
                seconds, _, name = marker.read_text().strip().partition("\t")
            except OSError:
                continue
            markers.append((int(marker.name), name or "done", seconds))
    if not markers:
        return ""
    rows = "".join(f'<tr><td class="num">{n}</td><td>{esc(name)}</td><td class="num">{esc(sec)}</td></tr>'
                   for n, name, sec in sorted(markers))
    return f"<table><tr><th>Stage</th><th>What</th><th>Wall time</th></tr>{rows}</table>"


def section_metrics(page: Page) -> str:
    try:
        metrics = read_json_dict(page.exp_dir / "metrics.json")
    except SectionError as exc:
        return note(f"No test metrics: {exc}; written by {PRODUCERS['metrics']}.")
    split = metrics.get("split")
    if not split:
        intro = ""
    elif "mel_loss" in metrics:
        intro = (f'<p>Reconstruction on the <b>{esc(split)}</b> split: the convolutional decoder turns the codes '
                 'and the speaker into audio, compared with the original by the multi-scale log-mel L1.</p>')
    else:
        intro = (f'<p>Teacher-forced reconstruction on the <b>{esc(split)}</b> split: the decoder predicts each '
                 f'sample from the true previous samples, the codes and the speaker.</p>')
    shown = {k: v for k, v in metrics.items() if k not in ("split", "manifest")}
    return intro + key_value_table(shown, METRIC_LABELS)


def section_probe(page: Page) -> str:
    folder = page.exp_dir / "probe"
    if not folder.is_dir():
        return note(f"No phoneme probe yet: EXP_DIR/probe/ is missing; written by {PRODUCERS['probe']}.")
    files = sorted(folder.glob("*.json"), key=lambda p: (list(PROBE_SYSTEMS).index(p.stem)
                                                         if p.stem in PROBE_SYSTEMS else 9, p.stem))
    notes, systems = [], {}
    for name in PROBE_SYSTEMS:
        if not (folder / f"{name}.json").is_file():
            notes.append(f"probe/{name}.json is missing ({PRODUCERS['probe']}).")
    for path in files:
        try:
            record = read_json_dict(path, f"probe/{path.name}")
        except SectionError as exc:
            notes.append(f"Skipped {path.stem}: {exc}.")
            continue
        if path.stem in PROBE_SYSTEMS or any(k in record for k in PROBE_ROWS):
            systems[path.stem] = record  # other JSON files in probe/ are not systems
    parts = [note(n) for n in notes]
    if not systems:
        return "".join(parts) + note("No probe results to show.")

    columns: list[tuple[str, dict, bool]] = [(PROBE_SYSTEMS.get(n, n), s, False) for n, s in systems.items()]
    baselines = next((s["baselines"] for s in systems.values() if isinstance(s.get("baselines"), dict)), {})
    for key, record in baselines.items():
        if isinstance(record, dict):
            columns.append((PROBE_BASELINES.get(key, key.replace("_", " ")), record, True))
    keys = [k for k in PROBE_ROWS if any(k in c for _, c, _ in columns)]
    keys += sorted({k for _, c, base in columns if not base for k, v in c.items()
                    if k not in PROBE_ROWS and is_number(v)})
    baseline = '<br><span class="small">baseline</span>'
    head = "".join(f"<th>{esc(name)}{baseline if base else ''}</th>" for name, _, base in columns)
    rows = []
    for key in keys:
        label, direction, kind = PROBE_ROWS.get(key, (key.replace("_", " ").capitalize(), "", "num"))
        values = [c.get(key) if isinstance(c, dict) else None for _, c, _ in columns]
        numbers = [v for v, (_, _, base) in zip(values, columns) if is_number(v) and not base]
        best = None
        if direction and len(numbers) > 1:
            best = max(numbers) if direction == "up" else min(numbers)
        cells = "".join(
            f'<td class="num{" best" if best is not None and v == best else ""}">{esc(fmt(v, kind))}</td>'
            if key in c else '<td class="num muted">\u2014</td>'
            for v, (_, c, _) in zip(values, columns))
        rows.append(f"<tr><th>{esc(label)}{arrow(direction)}</th>{cells}</tr>")
    first = next(iter(systems.values()))
    scope = (f"the {first['split']} split" if first.get("split")
             else "all splits (also the utterances the models were trained on)")
    parts.append('<p>Frame-level agreement between the units and phone alignments, ABX discrimination and '
                 'speaker information, for the VQ-VAE codes and an MFCC k-means baseline with the same number '
                 f'of clusters, on {esc(scope)}. Bold: the better system of a row (baselines are references, '
                 'never bold). \u2014: not measured.</p>')
    parts.append(f"<table><tr><th>Metric</th>{head}</tr>{''.join(rows)}</table>")

    figures = []
    for name, record in systems.items():
        plots = record.get("plots")
        if not isinstance(plots, dict):
            continue
        for key, rel in plots.items():
            if not isinstance(rel, str):
                continue
            caption = f"{PROBE_SYSTEMS.get(name, name)}: {PLOT_LABELS.get(key, key.replace('_', ' '))}"
            figures.append(f"<figure>{page.image(folder / rel, caption)}<figcaption>{esc(caption)}"
                           f"</figcaption></figure>")
    if figures:
        parts.append("<h3>Plots</h3>" + "".join(figures))
    return "".join(parts)


KINDS = ("original", "reconstruction", "conversion")
# Summary keys shown elsewhere (facts line, per-signal table) or not worth a row.
CONVERT_HIDDEN = {"model", "exp_dir", "manifest", "split", "speakers", "targets", "skipped", "reference",
                  "speaker_similarity", "recognition", "mcd", "timing_seconds"}


def conversion_summary(summary: dict) -> str:
    """Facts, a per-signal table (similarity, recognition errors, MCD), then any other scalars."""
    parts = []
    facts = []
    if is_number(summary.get("num_items")):
        facts.append(f"{summary['num_items']} utterances"
                     + (f" of the {summary['split']} split" if summary.get("split") else ""))
    for key, label in (("speakers", "speakers"), ("targets", "target speakers")):
        if isinstance(summary.get(key), list) and summary[key]:
            facts.append(f"{label}: {', '.join(map(str, summary[key]))}")
    if isinstance(summary.get("skipped"), list):
        facts.append(f"{len(summary['skipped'])} skipped")
    if facts:
        parts.append(f"<p>{esc('; '.join(facts))}.</p>")

    sim = summary.get("speaker_similarity") if isinstance(summary.get("speaker_similarity"), dict) else {}
    rec = summary.get("recognition") if isinstance(summary.get("recognition"), dict) else {}
    rates = rec.get("error_rate") if isinstance(rec.get("error_rate"), dict) else {}
    mcd = summary.get("mcd") if isinstance(summary.get("mcd"), dict) else {}
    if sim or rates or mcd:
        unit = str(rec.get("unit", "word"))
        rows = []
        for kind in KINDS:
            side = sim.get(kind) if isinstance(sim.get(kind), dict) else {}
            cells = [side.get("source"), side.get("target"), rates.get(kind), mcd.get(kind)]
            rows.append(f"<tr><th>{esc(kind)}</th>"
                        + "".join(f'<td class="num">{esc(fmt(v))}</td>' for v in cells) + "</tr>")
        engine = f" ({rec['engine']})" if rec.get("engine") else ""
        parts.append(
            "<table><tr><th>Signal</th><th>Similarity to the source speaker</th>"
            f"<th>Similarity to the target speaker</th><th>{esc(unit.capitalize())} error rate{esc(engine)}"
            f"{arrow('down')}</th><th>MCD vs the original (dB)</th></tr>{''.join(rows)}</table>"
            '<p class="small">Speaker similarity: cosine between the signal\'s Resemblyzer embedding and the '
            "speaker's centroid over reference utterances. A good reconstruction stays close to the source "
            "speaker; a good conversion moves close to the target and away from the source. Error rates: "
            "pocketsphinx transcripts against the text, all edits over all reference words.</p>")
        for key in ("conversion_note", "definition"):
            if isinstance(mcd.get(key), str):
                parts.append(f'<p class="small">MCD: {esc(mcd[key])}</p>')
    rest = {k: v for k, v in summary.items() if k not in CONVERT_HIDDEN and (is_number(v) or v is None)}
    if rest:
        parts.append(key_value_table(rest, CONVERT_LABELS))
    return "".join(parts)


def item_scores(item: dict, kind: str) -> str:
    """What the evaluation measured on one signal of one item, for under its player."""
    lines = []
    sim = item.get("speaker_similarity")
    side = sim.get(kind) if isinstance(sim, dict) and isinstance(sim.get(kind), dict) else {}
    if is_number(side.get("source")) or is_number(side.get("target")):
        lines.append(f"similarity: source {fmt(side.get('source'))}, target {fmt(side.get('target'))}")
    transcripts, errors = item.get("transcripts"), item.get("word_errors")
    if isinstance(transcripts, dict) and isinstance(transcripts.get(kind), str):
        heard = f"heard: \u201c{transcripts[kind]}\u201d"
        if isinstance(errors, dict) and is_number(errors.get(kind)):
            words = item.get("reference_words")
            heard += f" ({errors[kind]} error{'' if errors[kind] == 1 else 's'}" + (
                f" in {words} word{'' if words == 1 else 's'})" if is_number(words) else ")")
        lines.append(heard)
    mcd = item.get("mcd")
    if isinstance(mcd, dict) and is_number(mcd.get(kind)):
        lines.append(f"MCD {fmt(mcd[kind])} dB")
    if kind == "conversion" and isinstance(item.get("conversion_closer_to_target"), bool):
        lines.append("closer to the target than to the source: "
                     + ("yes" if item["conversion_closer_to_target"] else "no"))
    return "".join(f'<div class="small">{esc(line)}</div>' for line in lines)


def section_conversion(page: Page) -> str:
    folder = page.exp_dir / "eval_convert"
    parts = []
    try:
        data = read_json_dict(folder / "metrics.json", "eval_convert/metrics.json")
    except SectionError as exc:
        parts.append(note(f"No conversion evaluation: {exc}; written by {PRODUCERS['eval_convert']}."))
        parts.append(section_convert_folder(page))
        return "".join(parts)
    summary = data.get("summary")
    if isinstance(summary, dict):
        parts.append(conversion_summary(summary))
    else:
        parts.append(note("eval_convert/metrics.json has no summary."))
    items = data.get("items")
    if not isinstance(items, list) or not items:
        parts.append(note("eval_convert/metrics.json lists no items."))
        return "".join(parts)
    known = {"id", "source_speaker", "target_speaker", "text", *KINDS, "spectrogram", "reference_words"}
    rows = []
    for item in items:
        if not isinstance(item, dict):
            continue
        scores = "".join(f"<div>{esc(short_label(k, CONVERT_LABELS))}: {esc(fmt(v))}</div>"
                         for k, v in item.items() if k not in known and is_number(v))
        about = (f"<b>{esc(item.get('id', '?'))}</b><br>{esc(item.get('source_speaker', '?'))} \u2192 "
                 f"{esc(item.get('target_speaker', '?'))}")
        if item.get("text"):
            about += f"<br><i>\u201c{esc(item['text'])}\u201d</i>"
        if scores:
            about += f'<div class="small">{scores}</div>'
        cells = [f"<td>{about}</td>"]
        for kind in KINDS:
            cells.append(f"<td>{page.audio(folder / str(item[kind]))}{item_scores(item, kind)}</td>"
                         if item.get(kind) else '<td class="muted">\u2014</td>')
        spec = item.get("spectrogram")
        cells.append(f"<td>{page.image(folder / str(spec), 'spectrograms of ' + str(item.get('id', '')))}</td>"
                     if spec else '<td class="muted">\u2014</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    parts.append("<h3>Samples</h3><p>Each row: a test utterance (original), its reconstruction with the "
                 "source speaker, and its conversion to the target speaker (same codes, other speaker "
                 "embedding).</p>")
    parts.append('<table class="demo"><tr><th>Utterance: source \u2192 target</th><th>Original</th>'
                 "<th>Reconstruction</th><th>Conversion</th><th>Spectrograms</th></tr>" + "".join(rows) + "</table>")
    return "".join(parts)


def section_convert_folder(page: Page) -> str:
    """The plain `convert` outputs (EXP_DIR/convert/<target>/<id>.wav) when no evaluation exists."""
    folder = page.exp_dir / "convert"
    targets = sorted(p for p in folder.glob("*") if p.is_dir() and any(p.glob("*.wav")))
    if not targets:
        return note(f"No conversions either: EXP_DIR/convert/ is empty or missing; written by {PRODUCERS['convert']}.")
    manifest, records = page.manifest, page.records
    ids = sorted({w.stem for t in targets for w in t.glob("*.wav")})
    head = "".join(f"<th>\u2192 {esc(t.name)}</th>" for t in targets)
    rows = []
    for uid in ids:
        record = records.get(uid)
        about = f"<b>{esc(uid)}</b>"
        if record:
            about += f"<br>speaker {esc(record.get('speaker', '?'))}"
            if record.get("text"):
                about += f"<br><i>\u201c{esc(record['text'])}\u201d</i>"
        original = manifest_audio(manifest, record)
        cells = [f"<td>{about}</td>", f"<td>{page.audio(original)}</td>" if original else
                 '<td class="muted">\u2014</td>']
        for t in targets:
            wav = t / f"{uid}.wav"
            cells.append(f"<td>{page.audio(wav)}</td>" if wav.is_file() else '<td class="muted">\u2014</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return ("<h3>Conversions (recipe stage 4)</h3><p>Test utterances decoded from their codes with each target "
            "speaker's embedding; the original is the prepared audio the manifest points at.</p>"
            f'<table class="demo"><tr><th>Utterance</th><th>Original</th>{head}</tr>{"".join(rows)}</table>')


def section_prior(page: Page) -> str:
    folder = page.exp_dir / "prior_samples"
    files = sorted(folder.glob("*/samples.json"))
    if not files:
        return note(f"No prior samples: EXP_DIR/prior_samples/<speaker>/samples.json is missing; written by "
                    f"{PRODUCERS['prior_samples']}.")
    parts = ["<p>Speech generated from scratch: code sequences sampled from the prior for one speaker, "
             "decoded by the VQ-VAE's decoder. Bits per code: the sample's negative log-likelihood under "
             "the prior (lower: more typical).</p>"]
    for path in files:
        try:
            record = read_json_dict(path)
        except SectionError as exc:
            parts.append(note(f"Skipped {path.parent.name}: {exc}."))
            continue
        speaker = record.get("speaker", path.parent.name)
        wavs = record.get("wavs")
        if isinstance(wavs, list) and wavs:
            # Recorded relative to where the recipe ran; the files sit next to samples.json.
            wav_paths = [path.parent / Path(str(w)).name for w in wavs]
        else:
            wav_paths = sorted(path.parent.glob("sample_*.wav"))
        bits = record.get("kept_bits_per_code")
        bits = bits if isinstance(bits, list) else []
        rows = []
        for i, wav in enumerate(wav_paths):
            b = bits[i] if i < len(bits) else None
            rows.append(f'<tr><td>{esc(wav.stem)}</td><td>{page.audio(wav)}</td>'
                        f'<td class="num">{esc(fmt(b))}</td></tr>')
        facts = []
        for key, label in (("seconds", "seconds each"), ("temperature", "temperature"),
                           ("candidates", "candidates drawn"), ("samples_codes_used", "codes used in the samples"),
                           ("data_codes_used", "codes used in the data"),
                           ("samples_perplexity", "perplexity of the samples"),
                           ("data_perplexity", "perplexity of the data"),
                           ("all_bits_per_code_mean", "mean bits per code over all candidates")):
            if is_number(record.get(key)):
                facts.append(f"{label}: {record[key]:.4g}")
        parts.append(f"<h3>Speaker {esc(speaker)}</h3>")
        if facts:
            parts.append(f'<p class="small">{esc("; ".join(facts))}.</p>')
        parts.append("<table><tr><th>Sample</th><th>Audio</th><th>Bits per code \u2193</th></tr>"
                     + "".join(rows) + "</table>")
    return "".join(parts)


def section_attribution(page: Page) -> str:
    manifest = page.manifest
    layout, prepare = corpus_layout(manifest)
    parts = []
    corpus = CORPORA.get(layout or "")
    if corpus is None:
        why = (f"unknown corpus layout {layout!r}" if layout else
               f"no prepare.json next to the manifest ({manifest}); written by {PRODUCERS['prepare']}")
        parts.append(note(f"Data source not identified: {why}. Credit your data here before sharing."))
    else:
        url = corpus["url"]
        link = f'<a href="{esc(url)}">{esc(url)}</a>' if url else "\u2014"
        rows = [("Corpus", esc(corpus["name"])), ("Authors / source", esc(corpus["credit"])),
                ("Licence / terms", esc(corpus["licence"])), ("Where", link),
                ("Sharing", esc(corpus["terms"]))]
        if prepare.get("corpus_dir"):
            rows.append(("Read from", esc(prepare["corpus_dir"])))
        parts.append("<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>")
    parts.append("<p>The reconstructions, conversions and prior samples on this page are generated by a model "
                 "trained on this data; they derive from it and are shared under the same terms where those "
                 "apply (attribution, share-alike or no redistribution).</p>")
    rows = "".join(f'<tr><td>{esc(name)}</td><td>{esc(who)}</td><td>{esc(use)}</td>'
                   f'<td><a href="{esc(url)}">{esc(url)}</a></td></tr>' for name, who, use, url in TOOLS)
    parts.append("<h3>Methods and tools</h3><table><tr><th>Tool</th><th>Authors, licence</th><th>Used for</th>"
                 f"<th>Where</th></tr>{rows}</table>")
    return "".join(parts)


SECTIONS: list[tuple[str, str, Callable[[Page], str]]] = [
    ("summary", "Experiment", section_summary),
    ("metrics", "Test metrics", section_metrics),
    ("probe", "Phoneme probe", section_probe),
    ("conversion", "Voice conversion", section_conversion),
    ("prior", "Samples from the prior", section_prior),
    ("attribution", "Data and attribution", section_attribution),
]


def load_config(exp_dir: Path) -> dict:
    if not exp_dir.is_dir():
        raise UserError(f"Experiment folder {exp_dir} does not exist; pass the EXP_DIR that `vqspeech train` wrote.")
    path = exp_dir / "config.yaml"
    if not path.is_file():
        raise UserError(f"{exp_dir} has no config.yaml, so it is not an experiment folder; pass the EXP_DIR "
                        "that `vqspeech train` wrote.")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"Cannot read {path} ({first_line(exc)}); fix or remove it.") from None
    if not isinstance(config, dict):
        raise UserError(f"{path} does not hold a configuration mapping; fix or remove it.")
    return config


def render_report(exp_dir: str | os.PathLike, out: str | os.PathLike) -> str:
    """The HTML text of the report for ``exp_dir``, with links relative to ``out``'s folder."""
    exp_dir = Path(exp_dir)
    page = Page(exp_dir=exp_dir.absolute(), out_dir=Path(out).absolute().parent, config=load_config(exp_dir))
    body = []
    for anchor, title, render in SECTIONS:
        try:
            content = render(page)
        except SectionError as exc:
            content = note(f"Section skipped: {exc}.")
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OSError) as exc:
            # Files with an unexpected shape: show what went wrong, keep the rest of the page.
            content = note(f"Section skipped: its files have an unexpected shape ({type(exc).__name__}: "
                           f"{first_line(exc)}).")
        body.append(f'<section id="{anchor}"><h2>{esc(title)}</h2>{content}</section>')
    name = exp_dir.absolute().name
    layout, _ = corpus_layout(page.manifest)
    corpus = CORPORA.get(layout or "", {}).get("name", "")
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    from . import __version__
    nav = " ".join(f'<a href="#{a}">{esc(t)}</a>' for a, t, _ in SECTIONS)
    decoder = ("an adversarially trained convolutional decoder"
               if isinstance(page.config.get("model"), dict) and page.config["model"].get("decoder_type") == "conv"
               else "a speaker-conditioned WaveNet decoder")
    subtitle = f"Discrete speech units learned with a VQ-VAE and {decoder}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="{GENERATOR}">'
        f"<title>{esc(name)}: vqspeech report</title><style>{CSS}</style></head>\n"
        '<body data-media-checked="false">'
        '<div id="media-banner" role="alert"></div>'
        f"<header><h1>{esc(name)}</h1><p>{esc(subtitle)}</p>"
        + (f"<p>Data: {esc(corpus)}</p>" if corpus else "")
        + (note(f"Licence: {CORPORA[layout]['terms']}") if layout == "timit" else "")
        + f'<p class="small">Experiment folder {esc(page.exp_dir)}; report written {esc(now)} by '
        f"<code>vqspeech report</code> (vqspeech {esc(__version__)}).</p></header>"
        f"<nav>{nav}</nav>\n" + "\n".join(body)
        + '<footer>Audio and images are linked relative to this page; keep the page in its folder (next to '
        "the experiment's files) for them to play. A red banner at the top lists any that fail to load."
        f"</footer><script>{SCRIPT}</script></body></html>\n"
    )


def write_report(exp_dir: str | os.PathLike, out: str | os.PathLike | None = None, *,
                 overwrite: bool = False) -> Path:
    """Write the HTML report of ``exp_dir`` to ``out`` (default ``EXP_DIR/report.html``); returns its path.

    A report written earlier is replaced (it is derived from the folder's files); any other existing
    file only with ``overwrite``. ``out`` may be an existing folder, which then receives ``report.html``.
    """
    exp_dir = Path(exp_dir)
    out_path = exp_dir / "report.html" if out is None else Path(out)
    if out_path.is_dir():
        out_path = out_path / "report.html"
    if out_path.is_file() and not overwrite and not _is_report(out_path):
        raise UserError(f"{out_path} exists and is not a vqspeech report; pass --overwrite to replace it "
                        "or choose another --out.")
    text = render_report(exp_dir, out_path)
    try:
        write_text_atomic(out_path, text)
    except OSError as exc:
        raise UserError(f"Cannot write the report to {out_path} ({first_line(exc)}); choose another --out.") from None
    return out_path


def _is_report(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            head = f.read(4096)
    except OSError:
        return False
    # the generator tag, or the title every report has carried (pages written before the tag)
    return f'<meta name="generator" content="{GENERATOR}">' in head or ": vqspeech report</title>" in head
