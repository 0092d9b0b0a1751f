"""Figures (matplotlib, Agg backend): spectrograms a person can open as PNG or see in TensorBoard."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .models.frontend import LogMelFrontend  # noqa: E402


def log_mel(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """audio [T] -> log-mel [80, frames] at a 10 ms hop."""
    hop = max(1, sample_rate // 100)
    frontend = LogMelFrontend(sample_rate, hop, n_mels=80)
    with torch.no_grad():
        return frontend(torch.as_tensor(audio, dtype=torch.float32)[None])[0].numpy()


def spectrogram_figure(signals: dict[str, np.ndarray], sample_rate: int):
    """One log-mel panel per named signal, stacked vertically on a shared colour scale."""
    fig, axes = plt.subplots(len(signals), 1, figsize=(8, 2.2 * len(signals)), squeeze=False)
    for ax, (name, audio) in zip(axes[:, 0], signals.items()):
        spec = log_mel(audio, sample_rate)
        ax.imshow(spec, origin="lower", aspect="auto", vmin=-11, vmax=2, cmap="magma",
                  extent=(0, len(audio) / sample_rate, 0, spec.shape[0]))
        ax.set_title(name)
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    return fig


def save_spectrograms(path, signals: dict[str, np.ndarray], sample_rate: int) -> None:
    fig = spectrogram_figure(signals, sample_rate)
    fig.savefig(path, dpi=100)
    plt.close(fig)
