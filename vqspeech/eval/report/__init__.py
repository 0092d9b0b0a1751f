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
import html
import os
import re
from pathlib import Path

import yaml

from ... import __version__
from ...data.corpora import corpus_licence
from ...errors import UserError, first_line
from ...fileio import check_not_in_owned_folder, enclosing_experiment, write_text_atomic
from .page import Page, SectionError, corpus_layout, esc, media_check_script, note, stylesheet
from .sections import SECTIONS

__all__ = ["GENERATOR", "render_report", "write_report"]

GENERATOR = "vqspeech report"
"""The page's <meta name="generator">: marks a file the report may replace without --overwrite."""


def load_config(exp_dir: Path) -> dict:
    """The experiment's ``config.yaml``; UserError when ``exp_dir`` is not an experiment folder."""
    if exp_dir.is_file():
        raise UserError(
            f"{exp_dir} is a file; a report is of an experiment folder (the EXP_DIR that `vqspeech train` wrote), "
            "not of a checkpoint file."
        )
    if not exp_dir.is_dir():
        raise UserError(f"Experiment folder {exp_dir} does not exist; pass the EXP_DIR that `vqspeech train` wrote.")
    path = exp_dir / "config.yaml"
    if not path.is_file():
        raise UserError(
            f"{exp_dir} has no config.yaml, so it is not an experiment folder; pass the EXP_DIR "
            "that `vqspeech train` wrote."
        )
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, yaml.YAMLError) as exc:
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
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError, OSError) as exc:
            # Files with an unexpected shape: show what went wrong, keep the rest of the page.
            content = note(
                f"Section skipped: its files have an unexpected shape ({type(exc).__name__}: {first_line(exc)})."
            )
        body.append(f'<section id="{anchor}"><h2>{esc(title)}</h2>{content}</section>')
    name = exp_dir.absolute().name
    layout, _ = corpus_layout(page.manifest)
    licence = corpus_licence(layout or "")
    corpus = licence.name if licence else ""
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    nav = " ".join(f'<a href="#{a}">{esc(t)}</a>' for a, t, _ in SECTIONS)
    decoder = (
        "an adversarially trained convolutional decoder"
        if isinstance(page.config.get("model"), dict) and page.config["model"].get("decoder_type") == "conv"
        else "a speaker-conditioned WaveNet decoder"
    )
    subtitle = f"Discrete speech units learned with a VQ-VAE and {decoder}"
    if page.stage == "units":
        subtitle = (
            f"Discrete speech units learned through the {page.config['model'].get('objective')} objective: the "
            "first stage of two (its waveform decoder is not trained yet)"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="{GENERATOR}">'
        f'<meta name="vqspeech-experiment" content="{esc(os.path.realpath(exp_dir))}">'
        f"<title>{esc(name)}: vqspeech report</title><style>{stylesheet()}</style></head>\n"
        '<body data-media-checked="false">'
        '<div id="media-banner" role="alert"></div>'
        f"<header><h1>{esc(name)}</h1><p>{esc(subtitle)}</p>"
        + (f"<p>Data: {esc(corpus)}</p>" if corpus else "")
        + (note(f"Licence: {licence.terms}") if licence and layout == "timit" else "")
        + f'<p class="small">Experiment folder {esc(page.exp_dir)}; report written {esc(now)} by '
        f"<code>vqspeech report</code> (vqspeech {esc(__version__)}).</p></header>"
        f"<nav>{nav}</nav>\n"
        + "\n".join(body)
        + "<footer>Audio and images are linked relative to this page; keep the page in its folder (next to "
        "the experiment's files) for them to play. A red banner at the top lists any that fail to load."
        f"</footer><script>{media_check_script()}</script></body></html>\n"
    )


def write_report(exp_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, overwrite: bool = False) -> Path:
    """Write the HTML report of ``exp_dir`` to ``out`` (default ``EXP_DIR/report.html``); returns its path.

    A report written earlier is replaced (it is derived from the folder's files); any other existing
    file only with ``overwrite``. ``out`` may be an existing folder, which then receives ``report.html``.
    """
    exp_dir = Path(exp_dir)
    out_path = exp_dir / "report.html" if out is None else Path(out)
    if out_path.is_dir():
        out_path = out_path / "report.html"
    if out_path.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"`out` {out_path} should name an .html file.")
    check_not_in_owned_folder(out_path)
    here = Path(os.path.realpath(exp_dir))
    other = enclosing_experiment(out_path)  # the nearest: a nested experiment (EXP/units) reports at home
    if other is not None and other != here:
        raise UserError(
            f"{out_path} would be written into the experiment {other}, not {exp_dir}'s; write the report into "
            f"{exp_dir} (the default) or a folder of its own."
        )
    if os.path.lexists(out_path) and not out_path.is_file() and not overwrite:  # a pipe, a device, a dangling link
        raise UserError(
            f"{out_path} exists and is not a file; pass `overwrite=True` to replace it or choose another `out`."
        )
    if out_path.is_file() and not overwrite:
        theirs = _report_experiment(out_path)
        if theirs is None:
            raise UserError(
                f"{out_path} exists and is not a vqspeech report; pass `overwrite=True` to replace it "
                "or choose another `out`."
            )
        own = Path(os.path.realpath(out_path)).parent == here  # its own report, also after the folder moved
        if not own and theirs not in (str(here), here.name):
            raise UserError(
                f"{out_path} is the report of another experiment ({theirs}); pass `overwrite=True` to replace it "
                "or choose another `out`."
            )
    text = render_report(exp_dir, out_path)
    try:
        write_text_atomic(out_path, text)
    except OSError as exc:
        raise UserError(f"Cannot write the report to {out_path} ({first_line(exc)}); choose another `out`.") from None
    return out_path


def _report_experiment(path: Path) -> str | None:
    """The experiment a report at ``path`` is about (its folder; its name for a report written before
    the folder was recorded), or None when the file is not a report."""
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            head = f.read(8192)
    except OSError:
        return None
    # the generator tag, or the title every report has carried (pages written before the tag)
    if f'<meta name="generator" content="{GENERATOR}">' not in head and ": vqspeech report</title>" not in head:
        return None
    found = re.search(r'<meta name="vqspeech-experiment" content="([^"]*)">', head)
    if found:
        return html.unescape(found[1])
    title = re.search(r"<title>(.*): vqspeech report</title>", head)
    return html.unescape(title[1]) if title else ""
