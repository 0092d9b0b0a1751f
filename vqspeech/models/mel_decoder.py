"""The ``mel`` unit objective's decoder: code vectors + speaker -> the log-mel spectrogram.

Units learned through a waveform decoder learn slowly on a CPU (every step predicts thousands of
mu-law samples autoregressively) and may keep speaker detail the decoder finds useful. Here the
encoder and quantizer learn through a small non-autoregressive network that predicts the input's
log-mel frames from the (time-jittered) code vectors and a speaker embedding: one step costs a few
convolutions at the code rate, and the speaker embedding carries what the codes need not. The
waveform decoder is trained afterwards on the frozen codes (``train.units_from``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .frontend import LogMelFrontend, real_frames


@dataclass
class MelOutput:
    """What the mel objective returns for audio [B, T] (F = T // hop frames)."""

    predicted: torch.Tensor  # [B, n_mels, F] predicted log-mel, with its graph
    target: torch.Tensor  # [B, n_mels, F] log-mel of the input audio
    loss: torch.Tensor  # L1 between them over real frames (padding excluded), with its graph


class ConditionedBlock(nn.Module):
    """x + W2 relu(W1_dilated relu(x + g)): a non-causal residual block with a global condition
    g [B, C, 1] added to its input; [B, C, F] -> [B, C, F]."""

    def __init__(self, channels: int, dilation: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv1d(
            channels, channels, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2
        )
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return x + self.proj(torch.relu(self.conv(torch.relu(x + condition))))


class MelDecoder(nn.Module):
    """Code vectors [B, D, F] + speaker ids [B] -> log-mel [B, n_mels, F].

    Args:
        num_speakers: size of the speaker embedding table.
        latent_dim: D, the code vectors' size.
        sample_rate, hop_length: the model's; the target is a log-mel frame per code
            (:class:`LogMelFrontend`, a Hann window of 2 * hop_length samples).
        n_mels: mel bands predicted.
        channels: width of the residual stack.
        dilations: one non-causal residual block (kernel 3) per entry. The default, one block, keeps
            the prediction frame-local (+-2 frames), so the codes must carry each frame's spectrum.
        global_channels: speaker-embedding size (projected to ``channels`` for every block).
    """

    def __init__(
        self,
        num_speakers: int,
        latent_dim: int,
        sample_rate: int,
        hop_length: int,
        n_mels: int = 80,
        channels: int = 128,
        dilations: Sequence[int] = (1,),
        global_channels: int = 64,
    ):
        super().__init__()
        self.hop_length = hop_length
        self.target_frontend = LogMelFrontend(sample_rate, hop_length, n_mels)
        self.speaker_embedding = nn.Embedding(num_speakers, global_channels)
        self.input_proj = nn.Conv1d(latent_dim, channels, 3, padding=1)
        self.conditions = nn.ModuleList(nn.Linear(global_channels, channels) for _ in dilations)
        self.blocks = nn.ModuleList(ConditionedBlock(channels, d) for d in dilations)
        self.output_proj = nn.Conv1d(channels, n_mels, 1)

    def forward(self, latents: torch.Tensor, speakers: torch.Tensor) -> torch.Tensor:
        """latents [B, D, F], speakers [B] -> predicted log-mel [B, n_mels, F]."""
        speaker = self.speaker_embedding(speakers)
        x = self.input_proj(latents)
        for block, condition in zip(self.blocks, self.conditions, strict=True):
            x = block(x, condition(speaker)[:, :, None])
        return self.output_proj(torch.relu(x))

    def reconstruct(
        self, audio: torch.Tensor, latents: torch.Tensor, speakers: torch.Tensor, mask: torch.Tensor | None = None
    ) -> MelOutput:
        """The training objective: audio [B, F * hop] (the encoder's input), latents [B, D, F],
        speakers [B], optional mask [B, F * hop] (1 = real sample) -> :class:`MelOutput`. A frame
        counts when all its samples are real."""
        with torch.no_grad():
            target = self.target_frontend(audio)
        predicted = self(latents, speakers)
        error = (predicted - target).abs().mean(1)  # [B, F]
        if mask is None:
            loss = error.mean()
        else:
            real = real_frames(mask, error.shape[1], self.hop_length).to(error.dtype)
            loss = (error * real).sum() / real.sum().clamp_min(1.0)
        return MelOutput(predicted, target, loss)
