"""The page's sections: each reads its own files from the experiment folder and returns its HTML.

A section raises :class:`~.page.SectionError` (or leaves a note) when its files are missing or
unreadable; the page shows that note in its place and goes on with the next section.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from ...config import compose, config_dir
from ...data.codes import CodesInfo
from ...data.corpora import corpus_licence
from ...errors import UserError
from ...fileio import CONVERT_MARK, RUN_RECORD, read_generation_mark
from .labels import (
    CONVERT_LABELS,
    METRIC_LABELS,
    PLOT_LABELS,
    PROBE_BASELINES,
    PROBE_ROWS,
    PROBE_SYSTEMS,
    PRODUCERS,
    TOOLS,
    TRAIN_LABELS,
)
from .page import (
    Page,
    SectionError,
    arrow,
    corpus_layout,
    esc,
    fmt,
    is_number,
    key_value_table,
    manifest_audio,
    note,
    read_json_dict,
    short_label,
)


def model_name(exp_dir: Path, model_cfg: dict) -> str:
    """`small`, `small + model.num_codes=256`, or a conf/model option the config matches, or `custom`.

    Without a ``model=`` override the config is compared with each ``conf/model`` option as Hydra
    composes it; the first match in name order wins, an option other than ``base`` before ``base``.
    """
    overrides_file = exp_dir / "overrides.yaml"
    try:
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else None
    except (OSError, RecursionError, yaml.YAMLError):
        overrides = None
    if isinstance(overrides, list):
        names = [str(o).split("=", 1)[1] for o in overrides if str(o).startswith("model=")]
        extra = [str(o) for o in overrides if str(o).lstrip("+~").startswith("model.")]
        if names:
            return " + ".join([names[-1], *extra])
    try:
        candidates = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
    except OSError:
        candidates = []
    base_matches = False
    for candidate in candidates:
        try:
            composed = compose([f"model={candidate}", "data.manifest=x"])["model"]
        except Exception:  # any failure: naming the config is a nicety
            continue
        if composed == model_cfg:
            if candidate != "base":
                return candidate
            base_matches = True
    return "base" if base_matches else "custom"


def read_parameters(exp_dir: Path) -> int | None:
    """The model's parameter count as training recorded it (train_summary.json "parameters"), or None."""
    try:
        params = read_json_dict(exp_dir / "train_summary.json").get("parameters")
    except SectionError:
        return None
    return int(params) if is_number(params) else None


def _dict_at(record: dict, key: str) -> dict:
    """``record[key]`` when it is a dict (a JSON object), else an empty dict."""
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def read_speakers(exp_dir: Path) -> list[str]:
    try:
        return [s for s in (exp_dir / "speakers.txt").read_text().split("\n") if s.strip()]
    except (OSError, ValueError):  # ValueError: not UTF-8
        return []


def section_summary(page: Page) -> str:
    cfg = page.config
    model_cfg = _dict_at(cfg, "model")
    speakers = read_speakers(page.exp_dir)
    rows: list[tuple[str, str]] = []
    rows.append(("Model config", model_name(page.exp_dir, model_cfg) if model_cfg else "(no model section)"))
    params = read_parameters(page.exp_dir) if model_cfg else None
    if params is not None:
        rows.append(("Parameters", f"{params:,} ({params / 1e6:.2f} M)"))
    sr, hop = model_cfg.get("sample_rate"), model_cfg.get("hop_length")
    if is_number(sr):
        rows.append(("Sample rate", f"{sr:,} Hz"))
    if is_number(sr) and is_number(hop) and hop:
        rows.append(("Code rate", f"{sr / hop:g} codes per second (hop {hop} samples)"))
    groups = _dict_at(model_cfg, "quantizer").get("groups", 1)
    if "num_codes" in model_cfg and is_number(groups) and groups > 1:  # "codes used" is then of G x K codes
        k, dim = model_cfg["num_codes"], model_cfg.get("latent_dim")
        each = f"dimension {dim // groups:g} each" if is_number(dim) and dim % groups == 0 else "each"
        rows.append(
            (
                "Codebook",
                f"{groups:g} codebooks of K = {k}, {each}: a unit is {groups:g} codes; the metrics' codes used "
                f"count the codes of all {groups:g} codebooks (of {groups:g} x {k}), the probe's the distinct units",
            )
        )
    elif "num_codes" in model_cfg:
        rows.append(("Codebook", f"K = {model_cfg['num_codes']}, dimension {model_cfg.get('latent_dim', '?')}"))
    top = _dict_at(model_cfg, "top")
    if is_number(top.get("stride")) and top["stride"] > 0:
        rate = f", {sr / hop / top['stride']:g} codes per second" if is_number(sr) and is_number(hop) and hop else ""
        rows.append(
            ("Top level (VQ-VAE-2)", f"K = {top.get('num_codes', '?')}, one code every {top['stride']} codes{rate}")
        )
    enc = _dict_at(model_cfg, "encoder")
    if enc:
        rows.append(
            (
                "Encoder",
                f"{enc.get('frontend', '?')} front end, {enc.get('channels', '?')} channels, "
                f"dilations {enc.get('dilations', '?')}",
            )
        )
    dec = _dict_at(model_cfg, "decoder")
    conv = _dict_at(model_cfg, "conv_decoder")
    units_from = _dict_at(cfg, "train").get("units_from")
    if page.stage == "units":
        rows.append(
            (
                "Waveform decoder",
                "not trained: this is the units stage; train one on these codes in a new experiment with "
                f"train.units_from={page.exp_dir}",
            )
        )
    elif model_cfg.get("decoder_type") == "conv":
        rows.append(
            (
                "Convolutional decoder (adversarial)",
                f"{conv.get('channels', '?')} channels, upsampling strides {conv.get('upsample_strides', '?')}",
            )
        )
    elif dec:
        rows.append(
            (
                "WaveNet decoder",
                f"{dec.get('layers', '?')} layers in {dec.get('cycles', '?')} cycles, "
                f"residual/gate/skip {dec.get('residual_channels', '?')}/"
                f"{dec.get('gate_channels', '?')}/{dec.get('skip_channels', '?')}",
            )
        )
    if page.stage == "decoder" and isinstance(units_from, str):
        rows.append(("Units from", f"{units_from} (frozen)"))
    if speakers:
        shown = ", ".join(speakers[:12]) + (f", \u2026 ({len(speakers)} in all)" if len(speakers) > 12 else "")
        rows.append(("Speakers the model knows", shown))
    if page.untrained_speakers:
        rows.append(("Voices its decoder never trained (refused as targets)", ", ".join(page.untrained_speakers)))
    train_cfg = _dict_at(cfg, "train")

    parts = ["<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows) + "</table>"]

    enrolment = enrolment_part(page)
    parts.append(enrolment)
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
        parts.append(key_value_table({k: v for k, v in summary.items() if k != "parameters"}, TRAIN_LABELS))
        if is_number(summary.get("step")) and is_number(page.model_step) and summary["step"] != page.model_step:
            parts.append(
                note(
                    f"Training went on after this summary: checkpoints/last.pt is at step {page.model_step:g} (a "
                    f"`vqspeech train` that was interrupted, or still runs); the summary is of the run that ended "
                    f"at step {summary['step']:g}. Results below are compared with step {page.model_step:g}."
                )
            )
    except SectionError as exc:
        if enrolment:  # `vqspeech train` refuses an enrolment's folder: its training is its source's
            parts.append(note("An enrolled model: its training is that of its source experiment (above)."))
        else:
            parts.append(note(f"No training summary: {exc}; written by {PRODUCERS['train_summary']}."))

    parts.append("<h3>Data</h3>")
    parts.append(data_table(page))

    prior = page.exp_dir / "prior" / "train_summary.json"
    if prior.is_file():
        parts.append("<h3>Prior over the codes</h3>")
        try:
            parts.append(
                key_value_table(
                    read_json_dict(prior),
                    {
                        "arch": ("Architecture", ""),
                        "parameters": ("Parameters", ""),
                        "step": ("Training steps", ""),
                        "minutes": ("Training time (minutes)", ""),
                        "valid_bits_per_code": ("Validation bits per code", "down"),
                        "valid_unigram_bits_per_code": ("Unigram baseline, bits per code", ""),
                        "best_valid_bits_per_code": ("Best validation bits per code", "down"),
                        "best_step": ("Best step", ""),
                    },
                )
            )
        except SectionError as exc:
            parts.append(note(f"Prior summary unreadable: {exc}."))
        if page.codebook_moved(prior_codebook(page.exp_dir / "prior")):
            parts.append(
                note(
                    "This prior learned codes of another codebook than the model's now (the model trained on, "
                    "or another model was written there, since), so `prior sample` refuses it; encode the data "
                    f"again and train a new prior ({PRODUCERS['prior_samples']})."
                )
            )

    stages = stage_table(page.exp_dir)
    if stages:
        parts.append("<h3>Recipe stages run</h3>" + stages)
    return "".join(parts)


def prior_codebook(prior: Path) -> str | None:
    """The codebook digest of the codes the prior in ``prior`` learned (its copy of their
    codes.json), or None when that is not known."""
    try:
        return CodesInfo.load(prior / "codes.json").codebook if (prior / "codes.json").is_file() else None
    except UserError:
        return None


def data_table(page: Page) -> str:
    manifest = page.manifest
    if manifest is None:
        return note("The config names no data.manifest.")
    rows = [("Manifest", str(manifest))]
    layout, prepare = corpus_layout(manifest)
    if prepare:
        licence = corpus_licence(layout or "")
        rows.append(("Corpus", f"{licence.name if licence else layout} (layout {layout})"))
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
    table = "<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows) + "</table>"
    return trained_data_note(page) + table


def trained_data_note(page: Page) -> str:
    """A warning when the manifest as it is now lists other training data than the model's
    checkpoint records (its training utterances' count and its speakers): prepared again since, or
    another manifest put in the config. The table then describes the manifest, not the model's data."""
    ckpt = page.last_checkpoint or {}
    data, speakers = ckpt.get("data"), ckpt.get("speakers")
    if not page.records or not isinstance(data, dict) or not is_number(data.get("train")):
        return ""
    train = [r for r in page.records.values() if r.get("split") == "train"]
    now_speakers = sorted({str(r.get("speaker")) for r in train})
    same_speakers = not isinstance(speakers, list) or set(now_speakers) <= set(map(str, speakers))  # + enrolled
    if len(train) == data["train"] and same_speakers:
        return ""
    return note(
        f"The model trained on {data['train']:g} utterances"
        + (f" of {len(speakers)} speakers" if isinstance(speakers, list) else "")
        + f"; the manifest lists {len(train):,} training utterances of {len(now_speakers)} speakers now (prepared "
        "again, or another manifest, since): the counts below are the manifest's, not the model's data."
    )


def stage_table(exp_dir: Path) -> str:
    markers = []
    for marker in (exp_dir / ".stages").glob("*"):
        if marker.name.isdigit():
            try:
                seconds, _, name = marker.read_text().strip().partition("\t")
            except (OSError, ValueError):  # ValueError: not UTF-8
                continue
            markers.append((int(marker.name), name or "done", seconds))
    if not markers:
        return ""
    rows = "".join(
        f'<tr><td class="num">{n}</td><td>{esc(name)}</td><td class="num">{esc(sec)}</td></tr>'
        for n, name, sec in sorted(markers)
    )
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
        intro = (
            f"<p>Reconstruction on the <b>{esc(split)}</b> split: the convolutional decoder turns the codes "
            "and the speaker into audio, compared with the original by the multi-scale log-mel L1.</p>"
        )
    else:
        intro = (
            f"<p>Teacher-forced reconstruction on the <b>{esc(split)}</b> split: the decoder predicts each "
            f"sample from the true previous samples, the codes and the speaker.</p>"
        )
    kept_out = ("split", "manifest", "manifest_digest", "step", "model_digest")
    shown = {k: v for k, v in metrics.items() if k not in kept_out}
    return stale_note(page, metrics, "These metrics", "metrics") + intro + key_value_table(shown, METRIC_LABELS)


def moved_since(then: float, now: float) -> str:
    """How the model moved from step ``then`` (when a result was made) to step ``now``: onwards
    (trained on), or back (trained again, or another model written into the experiment)."""
    if now > then:
        return f"the model has trained to step {now:g} since"
    return f"the model is now at step {now:g} (trained again, or another model written there since)"


def stale_note(page: Page, record: dict, what: str, producer: str, done: str = "measured") -> str:
    """A warning when the results ``record`` describes were ``done`` (measured, made) by another
    state of the model than the experiment's now (another step: it trained on since; the same step
    but another checkpoint: trained again, or copied from another experiment; no model there any
    more) or on other data than the experiment's manifest (another file, or the same one prepared
    again since), else nothing. Results written before these fields were recorded are compared by
    what they have."""
    again = "measure the model" if done == "measured" else "make them with the model"
    rerun = f"re-run {PRODUCERS[producer]} to {again} as it is."
    measured, now = record.get("step"), page.model_step
    if is_number(measured) and is_number(now) and measured != now:
        return note(f"{what} were {done} at step {measured:g}, but {moved_since(measured, now)}; {rerun}")
    digest = record.get("model_digest")
    if isinstance(digest, str) and page.model_digest is None:
        return note(f"{what} were {done} by a model that is not in {page.exp_dir / 'checkpoints'} any more.")
    if isinstance(digest, str) and digest != page.model_digest:
        return note(
            f"{what} were {done} by another state of the model than its checkpoints/last.pt (trained again to "
            f"the same step, or copied from another experiment); {rerun}"
        )
    manifest = record.get("manifest_digest")
    if isinstance(manifest, str) and page.manifest_digest is not None and manifest != page.manifest_digest:
        source = record.get("manifest")
        named = f" ({source})" if isinstance(source, str) and source != str(page.manifest) else ""
        return note(
            f"{what} were {done} on other data{named} than the experiment's manifest {page.manifest} "
            f"as it is now (another manifest, or it was prepared again since); {rerun}"
        )
    return ""


def enrolment_part(page: Page) -> str:
    """What ``vqspeech enroll`` recorded in ``enrolment.json`` (the speaker added, from what, how
    far), with a note for one stopped before its steps; "" for a trained experiment."""
    path = page.exp_dir / "enrolment.json"
    if not path.is_file():
        return ""
    try:
        record = read_json_dict(path, "enrolment.json")
    except SectionError as exc:
        return "<h3>Enrolment</h3>" + note(f"Skipped the enrolment: {exc}.")
    chain: list[str] = []
    earlier = record.get("source_enrolment")
    while isinstance(earlier, dict) and len(chain) < 20:  # enrolled from an enrolled model, and so on
        chain.append(str(earlier.get("name", "?")))
        earlier = earlier.get("source_enrolment")
    files = record.get("files")
    rows = {
        "Speaker added": record.get("name"),
        "Source model": record.get("source"),
        "Speakers enrolled before it": ", ".join(reversed(chain)) or None,
        "Recordings": len(files) if isinstance(files, list) else None,
        "Steps": record.get("steps"),
        "Minutes": record.get("minutes"),
        "First / last loss": (
            f"{fmt(record.get('first_loss'))} / {fmt(record.get('last_loss'))}"
            if is_number(record.get("first_loss")) and is_number(record.get("last_loss"))
            else None
        ),
    }
    table = (
        "<table>"
        + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows.items() if v is not None)
        + "</table>"
    )
    stopped = ""
    if record.get("finished") is not True:
        stopped = note(
            f"The enrolment stopped at step {record.get('steps')} before its end (interrupted); run the same "
            "`vqspeech enroll` again to finish it. Results below are of the model as it stopped."
        )
    return "<h3>Enrolment</h3>" + table + stopped


def probe_scope(record: dict) -> tuple:
    """What a probe result was scored on: split, utterance count, phone set and ignored labels.

    Systems of one scope compare, also at different code rates; systems of different scopes do not."""
    ignored = record.get("ignored_labels")
    return (
        record.get("split") if isinstance(record.get("split"), str) else None,
        record.get("num_utterances") if is_number(record.get("num_utterances")) else None,
        record.get("phone_set") if isinstance(record.get("phone_set"), str) else None,
        tuple(map(str, ignored)) if isinstance(ignored, list) else (),
    )


def describe_scope(scope: tuple) -> str:
    """``probe_scope``'s tuple as words: 'the test split, 200 utterances, phone set timit'."""
    if not scope:
        return "unknown data"
    split, count, phone_set, ignored = scope
    parts = [f"the {split} split" if split else "all splits (also the utterances the models were trained on)"]
    if count is not None:
        parts.append(f"{count:g} utterances")
    if phone_set:
        parts.append(f"phone set {phone_set}")
    if ignored:
        parts.append(f"ignoring {', '.join(ignored)}")
    return ", ".join(parts)


def section_probe(page: Page) -> str:
    folder = page.exp_dir / "probe"
    if not folder.is_dir():
        return note(f"No phoneme probe yet: EXP_DIR/probe/ is missing; written by {PRODUCERS['probe']}.")
    files = sorted(
        (p for p in folder.glob("*.json") if not p.name.startswith(".")),  # not temporary files
        key=lambda p: (list(PROBE_SYSTEMS).index(p.stem) if p.stem in PROBE_SYSTEMS else 9, p.stem),
    )
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
    for name, record in systems.items():
        if page.codebook_moved(record.get("codebook")):
            notes.append(
                f"The probe '{name}' measured codes of another codebook than the model's now (the model "
                "trained on, or another model was written there, since); re-run `vqspeech encode`, then "
                f"{PRODUCERS['probe']}, to measure the model as it is."
            )
    parts = [note(n) for n in notes]
    if not systems:
        return "".join(parts) + note("No probe results to show.")

    scopes = {name: probe_scope(record) for name, record in systems.items()}
    same_data = len(set(scopes.values())) == 1
    columns: list[tuple[str, dict, bool]] = [(PROBE_SYSTEMS.get(n, n), s, False) for n, s in systems.items()]
    source, baselines = next(
        ((n, s["baselines"]) for n, s in systems.items() if isinstance(s.get("baselines"), dict)), ("", {})
    )
    for key, value in baselines.items():
        if isinstance(value, dict):
            columns.append((PROBE_BASELINES.get(key, key.replace("_", " ")), value, True))
    keys = [k for k in PROBE_ROWS if any(k in c for _, c, _ in columns)]
    keys += sorted(
        {k for _, c, base in columns if not base for k, v in c.items() if k not in PROBE_ROWS and is_number(v)}
    )
    baseline = '<br><span class="small">baseline</span>'
    column_scopes = [scopes[n] for n in systems] + [scopes.get(source, ())] * (len(columns) - len(systems))
    head = "".join(  # on different data, each column says what it was scored on
        f"<th>{esc(name)}{baseline if base else ''}"
        + ("" if same_data else f'<br><span class="small">{esc(describe_scope(scope))}</span>')
        + "</th>"
        for (name, _, base), scope in zip(columns, column_scopes, strict=True)
    )
    rows = []
    for key in keys:
        label, direction, kind = PROBE_ROWS.get(key, (key.replace("_", " ").capitalize(), "", "num"))
        values = [c.get(key) if isinstance(c, dict) else None for _, c, _ in columns]
        numbers = [v for v, (_, _, base) in zip(values, columns, strict=True) if is_number(v) and not base]
        best = None
        if direction and len(numbers) > 1 and same_data:
            best = max(numbers) if direction == "up" else min(numbers)
        cells = "".join(
            f'<td class="num{" best" if best is not None and v == best else ""}">{esc(fmt(v, kind))}</td>'
            if key in c
            else '<td class="num muted">\u2014</td>'
            for v, (_, c, _) in zip(values, columns, strict=True)
        )
        rows.append(f"<tr><th>{esc(label)}{arrow(direction)}</th>{cells}</tr>")
    described = "the data each column names" if not same_data else describe_scope(next(iter(scopes.values())))
    if not same_data:
        parts.append(
            note(
                "The systems were scored on different data (each column names its own), so their numbers do "
                f"not compare and no row has a winner; re-run {PRODUCERS['probe']} on the same split for each "
                "system."
            )
        )
    parts.append(
        "<p>Frame-level agreement between the units and phone alignments, ABX discrimination and "
        "speaker information, for the VQ-VAE codes and an MFCC k-means baseline with the same number "
        f"of clusters, on {esc(described)}."
        + (" Bold: the better system of a row (baselines are references, never bold)." if same_data else "")
        + " \u2014: not measured.</p>"
    )
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
            figures.append(
                f"<figure>{page.recorded_image(folder, rel, caption)}<figcaption>{esc(caption)}</figcaption></figure>"
            )
    if figures:
        parts.append("<h3>Plots</h3>" + "".join(figures))
    return "".join(parts)


KINDS = ("original", "reconstruction", "conversion")
# Summary keys shown elsewhere (facts line, per-signal table) or not worth a row.
CONVERT_HIDDEN = {
    "model",
    "step",
    "exp_dir",
    "manifest",
    "split",
    "speakers",
    "targets",
    "skipped",
    "reference",
    "speaker_similarity",
    "recognition",
    "mcd",
    "timing_seconds",
}


def conversion_summary(summary: dict) -> str:
    """Facts, a per-signal table (similarity, recognition errors, MCD), then any other scalars."""
    parts = []
    facts = []
    if is_number(summary.get("num_items")):
        facts.append(
            f"{summary['num_items']} utterances" + (f" of the {summary['split']} split" if summary.get("split") else "")
        )
    for key, label in (("speakers", "speakers"), ("targets", "target speakers")):
        if isinstance(summary.get(key), list) and summary[key]:
            facts.append(f"{label}: {', '.join(map(str, summary[key]))}")
    voices = summary.get("voices")
    if isinstance(voices, dict) and voices:  # targets the model never saw, given by reference audio
        facts.append(
            "voices the model never saw, given by reference audio (zero-shot): "
            + ", ".join(f"{name} ({Path(str(path)).name})" for name, path in voices.items())
        )
    if isinstance(summary.get("skipped"), list):
        facts.append(f"{len(summary['skipped'])} skipped")
    if facts:
        parts.append(f"<p>{esc('; '.join(facts))}.</p>")

    sim = _dict_at(summary, "speaker_similarity")
    rec = _dict_at(summary, "recognition")
    rates = _dict_at(rec, "error_rate")
    mcd = _dict_at(summary, "mcd")
    if sim or rates or mcd:
        unit = str(rec.get("unit", "word"))
        rows = []
        for kind in KINDS:
            side = _dict_at(sim, kind)
            cells = [side.get("source"), side.get("target"), rates.get(kind), mcd.get(kind)]
            rows.append(
                f"<tr><th>{esc(kind)}</th>" + "".join(f'<td class="num">{esc(fmt(v))}</td>' for v in cells) + "</tr>"
            )
        engine = f" ({rec['engine']})" if rec.get("engine") else ""
        parts.append(
            "<table><tr><th>Signal</th><th>Similarity to the source speaker</th>"
            f"<th>Similarity to the target speaker</th><th>{esc(unit.capitalize())} error rate{esc(engine)}"
            f"{arrow('down')}</th><th>MCD vs the original (dB)</th></tr>{''.join(rows)}</table>"
            '<p class="small">Speaker similarity: cosine between the signal\'s Resemblyzer embedding and the '
            "speaker's centroid over reference utterances. A good reconstruction stays close to the source "
            "speaker; a good conversion moves close to the target and away from the source. Error rates: "
            "pocketsphinx transcripts against the text, all edits over all reference words.</p>"
        )
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
    side = _dict_at(sim, kind) if isinstance(sim, dict) else {}
    if is_number(side.get("source")) or is_number(side.get("target")):
        lines.append(f"similarity: source {fmt(side.get('source'))}, target {fmt(side.get('target'))}")
    transcripts, errors = item.get("transcripts"), item.get("word_errors")
    if isinstance(transcripts, dict) and isinstance(transcripts.get(kind), str):
        heard = f"heard: \u201c{transcripts[kind]}\u201d"
        if isinstance(errors, dict) and is_number(errors.get(kind)):
            words = item.get("reference_words")
            heard += f" ({errors[kind]} error{'' if errors[kind] == 1 else 's'}" + (
                f" in {words} word{'' if words == 1 else 's'})" if is_number(words) else ")"
            )
        lines.append(heard)
    mcd = item.get("mcd")
    if isinstance(mcd, dict) and is_number(mcd.get(kind)):
        lines.append(f"MCD {fmt(mcd[kind])} dB")
    if kind == "conversion" and isinstance(item.get("conversion_closer_to_target"), bool):
        lines.append(
            "closer to the target than to the source: " + ("yes" if item["conversion_closer_to_target"] else "no")
        )
    return "".join(f'<div class="small">{esc(line)}</div>' for line in lines)


def section_conversion(page: Page) -> str:
    folder = page.exp_dir / "eval_convert"
    parts = []
    if page.stage == "units" and not folder.exists():  # `evaluate conversion` refuses a model without its decoder
        return note(
            "A units stage has no waveform decoder to convert with: train one on these codes (train.units_from) "
            "and evaluate conversions in that experiment."
        )
    try:
        data = read_json_dict(folder / "metrics.json", "eval_convert/metrics.json")
    except SectionError as exc:
        parts.append(note(f"No conversion evaluation: {exc}; written by {PRODUCERS['eval_convert']}."))
        parts.append(section_convert_folder(page))
        return "".join(parts)
    summary = data.get("summary")
    if isinstance(summary, dict):
        parts.append(stale_note(page, summary, "These conversions", "eval_convert"))
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
        scores = "".join(
            f"<div>{esc(short_label(k, CONVERT_LABELS))}: {esc(fmt(v))}</div>"
            for k, v in item.items()
            if k not in known and is_number(v)
        )
        about = (
            f"<b>{esc(item.get('id', '?'))}</b><br>{esc(item.get('source_speaker', '?'))} \u2192 "
            f"{esc(item.get('target_speaker', '?'))}"
        )
        if item.get("text"):
            about += f"<br><i>\u201c{esc(item['text'])}\u201d</i>"
        if scores:
            about += f'<div class="small">{scores}</div>'
        cells = [f"<td>{about}</td>"]
        for kind in KINDS:
            cells.append(
                f"<td>{page.recorded_audio(folder, str(item[kind]))}{item_scores(item, kind)}</td>"
                if item.get(kind)
                else '<td class="muted">\u2014</td>'
            )
        spec = item.get("spectrogram")
        cells.append(
            f"<td>{page.recorded_image(folder, str(spec), 'spectrograms of ' + str(item.get('id', '')))}</td>"
            if spec
            else '<td class="muted">\u2014</td>'
        )
        rows.append(f"<tr>{''.join(cells)}</tr>")
    parts.append(
        "<h3>Samples</h3><p>Each row: a test utterance (original), its reconstruction with the "
        "source speaker, and its conversion to the target speaker (same codes, other speaker "
        "embedding).</p>"
    )
    parts.append(
        '<table class="demo"><tr><th>Utterance: source \u2192 target</th><th>Original</th>'
        "<th>Reconstruction</th><th>Conversion</th><th>Spectrograms</th></tr>" + "".join(rows) + "</table>"
    )
    return "".join(parts)


def _wavs(folder: Path) -> list[Path]:
    """The wav files of a folder, not the temporary files of a write in progress or killed."""
    return [p for p in folder.glob("*.wav") if not p.name.startswith(".")]


def section_convert_folder(page: Page) -> str:
    """The plain `convert` outputs (EXP_DIR/convert/<target>/<id>.wav) when no evaluation exists."""
    folder = page.exp_dir / "convert"
    targets = sorted(p for p in folder.glob("*") if p.is_dir() and any(_wavs(p)))
    if not targets:
        return note(f"No conversions either: EXP_DIR/convert/ is empty or missing; written by {PRODUCERS['convert']}.")
    manifest, records = page.manifest, page.records
    ids = sorted({w.stem for t in targets for w in _wavs(t)})
    notes = "".join(_convert_folder_note(page, t) for t in targets)
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
        cells = [
            f"<td>{about}</td>",
            f"<td>{page.audio(original)}</td>" if original else '<td class="muted">\u2014</td>',
        ]
        for t in targets:
            wav = t / f"{uid}.wav"
            cells.append(  # a link out of the folder is left out
                f"<td>{page.recorded_audio(t, wav.name)}</td>" if wav.is_file() else '<td class="muted">\u2014</td>'
            )
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        "<h3>Conversions (recipe stage 4)</h3><p>Test utterances decoded from their codes with each target "
        "speaker's embedding; the original is the prepared audio the manifest points at.</p>"
        + notes
        + f'<table class="demo"><tr><th>Utterance</th><th>Original</th>{head}</tr>{"".join(rows)}</table>'
    )


def _convert_folder_note(page: Page, folder: Path) -> str:
    """A warning when a convert folder holds an unfinished run's outputs, or outputs made at another
    training step than the model's now (the step each output was made at is in the folder's mark)."""
    if (folder / RUN_RECORD).exists():
        return note(
            f"The conversions into {folder.name} are an unfinished run's (it was interrupted); re-run "
            f"{PRODUCERS['convert']} to finish them."
        )
    made = read_generation_mark(folder, CONVERT_MARK)
    now, digest = page.model_step, page.model_digest
    wavs = _wavs(folder)
    unknown = [w.name for w in wavs if w.name not in made]
    known = [made[w.name] for w in wavs if w.name in made]
    steps = sorted({e["step"] for e in known if is_number(e["step"]) and e["step"] != now})
    earlier = [e for e in known if e["step"] == now and e["model"] not in (None, digest)]
    notes = []
    if unknown:
        notes.append(
            f"{len(unknown)} of the {len(wavs)} conversions into {folder.name} (e.g. {unknown[0]}) were not "
            f"written there by `vqspeech convert`, or were changed since, so which model made them is not known; "
            f"re-run {PRODUCERS['convert']} to replace them."
        )
    if steps and is_number(now):
        notes.append(
            f"The conversions into {folder.name} were made at step {', '.join(f'{s:g}' for s in steps)}, but "
            f"{moved_since(min(steps), now)}; re-run {PRODUCERS['convert']} to make them with the model as it is."
        )
    if earlier and digest is not None:
        notes.append(
            f"{len(earlier)} of the conversions into {folder.name} were made by an earlier state of the model at "
            f"the same step (an enrolment continued or redone, or checkpoints/last.pt replaced); re-run "
            f"{PRODUCERS['convert']} to make them with the model as it is."
        )
    return "".join(note(n) for n in notes)


def section_prior(page: Page) -> str:
    folder = page.exp_dir / "prior_samples"
    files = sorted(folder.glob("*/samples.json"))
    if not files:
        return note(
            f"No prior samples: EXP_DIR/prior_samples/<speaker>/samples.json is missing; written by "
            f"{PRODUCERS['prior_samples']}."
        )
    parts = [
        "<p>Speech generated from scratch: code sequences sampled from the prior for one speaker, "
        "decoded by the VQ-VAE's decoder. Bits per code: the sample's negative log-likelihood under "
        "the prior (lower: more typical).</p>"
    ]
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
            names = [Path(str(w)).name for w in wavs]
        else:
            names = [p.name for p in sorted(path.parent.glob("sample_*.wav"))]
        bits = record.get("kept_bits_per_code")
        bits = bits if isinstance(bits, list) else []
        rows = []
        for i, name in enumerate(names):
            b = bits[i] if i < len(bits) else None
            audio = page.recorded_audio(path.parent, name)  # a link out of the folder is left out
            rows.append(f'<tr><td>{esc(Path(name).stem)}</td><td>{audio}</td><td class="num">{esc(fmt(b))}</td></tr>')
        facts = []
        for key, label in (
            ("seconds", "seconds each"),
            ("temperature", "temperature"),
            ("candidates", "candidates drawn"),
            ("samples_codes_used", "codes used in the samples"),
            ("data_codes_used", "codes used in the data"),
            ("samples_perplexity", "perplexity of the samples"),
            ("data_perplexity", "perplexity of the data"),
            ("all_bits_per_code_mean", "mean bits per code over all candidates"),
        ):
            if is_number(record.get(key)):
                facts.append(f"{label}: {record[key]:.4g}")
        parts.append(f"<h3>Speaker {esc(speaker)}</h3>")
        parts.append(
            stale_note(page, record, "These samples", "prior_samples", done="decoded") or prior_stale_note(page, record)
        )
        if facts:
            parts.append(f'<p class="small">{esc("; ".join(facts))}.</p>')
        parts.append(
            "<table><tr><th>Sample</th><th>Audio</th><th>Bits per code \u2193</th></tr>" + "".join(rows) + "</table>"
        )
    return "".join(parts)


def prior_stale_note(page: Page, record: dict) -> str:
    """A warning when samples were drawn from another prior than the one `prior sample` would use in
    ``EXP/prior`` now (an earlier state of it, or another folder's prior), else nothing."""
    state = page.prior_state
    if state is None:
        return ""
    step, digest = state
    drawn, drawn_step = record.get("prior_digest"), record.get("prior_step")
    rerun = f"re-run {PRODUCERS['prior_samples']} to draw them from it as it is."
    if is_number(drawn_step) and step is not None and drawn_step != step:
        return note(
            f"These samples were drawn from a prior at step {drawn_step:g}, but the prior in {page.exp_dir / 'prior'} "
            f"is at step {step:g}; {rerun}"
        )
    if isinstance(drawn, str) and drawn != digest:
        source = record.get("prior")
        named = f" ({source})" if isinstance(source, str) else ""
        return note(f"These samples were drawn from another prior{named} than {page.exp_dir / 'prior'}; {rerun}")
    return ""


def section_attribution(page: Page) -> str:
    manifest = page.manifest
    layout, prepare = corpus_layout(manifest)
    parts = []
    corpus = corpus_licence(layout or "")
    if corpus is None:
        why = (
            f"unknown corpus layout {layout!r}"
            if layout
            else f"no prepare.json next to the manifest ({manifest}); written by {PRODUCERS['prepare']}"
        )
        parts.append(note(f"Data source not identified: {why}. Credit your data here before sharing."))
    else:
        url = corpus.url
        link = f'<a href="{esc(url)}">{esc(url)}</a>' if url else "\u2014"
        rows = [
            ("Corpus", esc(corpus.name)),
            ("Authors / source", esc(corpus.credit)),
            ("Licence / terms", esc(corpus.licence)),
            ("Where", link),
            ("Sharing", esc(corpus.terms)),
        ]
        if prepare.get("corpus_dir"):
            rows.append(("Read from", esc(prepare["corpus_dir"])))
        parts.append("<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>")
    parts.append(
        "<p>The reconstructions, conversions and prior samples on this page are generated by a model "
        "trained on this data; they derive from it and are shared under the same terms where those "
        "apply (attribution, share-alike or no redistribution).</p>"
    )
    tool_rows = "".join(
        f"<tr><td>{esc(name)}</td><td>{esc(who)}</td><td>{esc(use)}</td>"
        f'<td><a href="{esc(url)}">{esc(url)}</a></td></tr>'
        for name, who, use, url in TOOLS
    )
    parts.append(
        "<h3>Methods and tools</h3><table><tr><th>Tool</th><th>Authors, licence</th><th>Used for</th>"
        f"<th>Where</th></tr>{tool_rows}</table>"
    )
    return "".join(parts)


SECTIONS: list[tuple[str, str, Callable[[Page], str]]] = [
    ("summary", "Experiment", section_summary),
    ("metrics", "Test metrics", section_metrics),
    ("probe", "Phoneme probe", section_probe),
    ("conversion", "Voice conversion", section_conversion),
    ("prior", "Samples from the prior", section_prior),
    ("attribution", "Data and attribution", section_attribution),
]
