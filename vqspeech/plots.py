"""Figures (matplotlib, Agg backend): spectrograms a person can open as PNG or see in TensorBoard."""

from __future__ import annotations

import functools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .fileio import atomic_path  # noqa: E402
from .models.frontend import LogMelFrontend  # noqa: E402


def plain(text: str) -> str:
    """``text`` as a label matplotlib draws as written: lone surrogates (a name's bytes that are not
    UTF-8) become escapes. Figures are made with mathtext off, so ``$`` in a name is drawn too."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _plain_text(make):
    """Run a figure function with mathtext off: names from the data ($x$, \\bogus) are not parsed."""

    @functools.wraps(make)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context({"text.parse_math": False}):
            return make(*args, **kwargs)

    return wrapper


def log_mel(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """audio [T] -> log-mel [80, frames] at a 10 ms hop."""
    hop = max(1, sample_rate // 100)
    frontend = LogMelFrontend(sample_rate, hop, n_mels=80)
    with torch.no_grad():
        return frontend(torch.as_tensor(audio, dtype=torch.float32)[None])[0].numpy()


@_plain_text
def spectrogram_figure(signals: dict[str, np.ndarray], sample_rate: int):
    """One log-mel panel per named signal, stacked vertically on a shared colour scale."""
    fig, axes = plt.subplots(len(signals), 1, figsize=(8, 2.2 * len(signals)), squeeze=False)
    for ax, (name, audio) in zip(axes[:, 0], signals.items(), strict=True):
        spec = log_mel(audio, sample_rate)
        ax.imshow(
            spec,
            origin="lower",
            aspect="auto",
            vmin=-11,
            vmax=2,
            cmap="magma",
            extent=(0, len(audio) / sample_rate, 0, spec.shape[0]),
        )
        ax.set_title(plain(name))
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    return fig


@_plain_text
def save_spectrograms(path, signals: dict[str, np.ndarray], sample_rate: int) -> None:
    fig = spectrogram_figure(signals, sample_rate)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _save(fig, path) -> None:
    """Write the figure as a PNG atomically (a link at ``path`` is replaced, not written through)."""
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)


@_plain_text
def save_code_usage(path, code_counts: np.ndarray, title: str = "code usage") -> None:
    """Bar chart of code frequencies [K], most used first, with the codebook perplexity."""
    p = np.sort(code_counts / max(code_counts.sum(), 1))[::-1]
    nz = p[p > 0]
    perplexity = float(np.exp(-np.sum(nz * np.log(nz))))
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.bar(np.arange(len(p)), p, width=1.0, color="tab:blue")
    ax.axhline(1 / len(p), color="gray", lw=1, ls="--", label="uniform 1/K")
    ax.set_xlabel(f"code rank ({len(nz)} of {len(p)} codes used, perplexity {perplexity:.1f})")
    ax.set_ylabel("fraction of frames")
    ax.set_title(plain(title))
    ax.legend()
    _save(fig, path)


@_plain_text
def save_code_phone_heatmap(path, counts: np.ndarray, phones: list[str], title: str = "p(phone | code)") -> None:
    """Heat map of p(phone | code) for the used codes of counts [K, P], codes grouped by their top phone."""
    used = np.flatnonzero(counts.sum(1) > 0)
    cond = counts[used] / counts[used].sum(1, keepdims=True)
    order = np.lexsort((-cond.max(1), cond.argmax(1)))
    fig, ax = plt.subplots(figsize=(max(6, 0.22 * len(phones) + 2), max(4, 0.05 * len(used) + 2)))
    image = ax.imshow(cond[order], aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(np.arange(len(phones)), [plain(p) for p in phones], rotation=90, fontsize=7)
    ax.set_xlabel("phone")
    ax.set_ylabel(f"code ({len(used)} used, sorted by most frequent phone)")
    ax.set_yticks([])
    ax.set_title(plain(title))
    fig.colorbar(image, ax=ax, fraction=0.03)
    _save(fig, path)


@_plain_text
def save_phone_accuracy(
    path, accuracy: np.ndarray, frames: np.ndarray, phones: list[str], title: str = "per-phone accuracy"
) -> None:
    """Bars of held-out mapping accuracy per phone [P], with each phone's share of frames."""
    order = np.argsort(-frames)
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(phones) + 2), 3.5))
    x = np.arange(len(phones))
    ax.bar(x, np.nan_to_num(accuracy[order]), color="tab:green", label="accuracy")
    ax.plot(x, frames[order] / frames.sum(), "k.", label="share of frames")
    ax.set_xticks(x, [plain(phones[i]) for i in order], rotation=90, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction")
    ax.set_title(plain(title) + " (phones by frequency)")
    ax.legend(fontsize=8)
    _save(fig, path)
