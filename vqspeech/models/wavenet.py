"""Speaker-conditioned WaveNet decoder (van den Oord et al., 2016) over 8-bit mu-law samples.

Channel names follow r9y9/wavenet_vocoder: ``residual_channels`` (the residual stream),
``gate_channels`` (output of each dilated convolution, split in half into tanh and sigmoid
parts), ``skip_channels``. Local conditioning arrives at frame rate and is upsampled by repetition
(``hop_length`` samples per frame); global conditioning is a learned speaker embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..audio import mu_law_encode
from .speaker_encoder import speaker_vectors


@dataclass
class TeacherForcedOutput:
    """What the WaveNet decoder's training objective returns for audio [B, T]."""

    logits: torch.Tensor  # [B, classes, T]
    targets: torch.Tensor  # [B, T] mu-law classes of the audio
    loss: torch.Tensor  # cross-entropy in nats, the mean over unmasked samples
    bits_per_sample: torch.Tensor  # the same in bits, detached


class ResidualLayer(nn.Module):
    """One gated, dilated, causal layer: x [B, R, T] -> (x' [B, R, T], skip [B, S, T]).

    ``local_channels=0`` means no local conditioning (only the global term; used by the code prior).
    """

    def __init__(
        self,
        residual_channels: int,
        gate_channels: int,
        skip_channels: int,
        kernel_size: int,
        dilation: int,
        local_channels: int,
        global_channels: int,
    ):
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation
        self.residual_channels = residual_channels
        self.dilated = nn.Conv1d(residual_channels, gate_channels, kernel_size, dilation=dilation)
        self.local_proj = nn.Conv1d(local_channels, gate_channels, 1, bias=False) if local_channels else None
        self.global_proj = nn.Linear(global_channels, gate_channels, bias=False)
        self.out_proj = nn.Conv1d(gate_channels // 2, residual_channels + skip_channels, 1)

    @property
    def receptive_field(self) -> int:
        return (self.kernel_size - 1) * self.dilation

    def conditioning(self, local: torch.Tensor | None, speaker: torch.Tensor) -> torch.Tensor:
        """Gate bias from both conditionings at frame rate: [B, L, F], [B, G] -> [B, gate, F].
        Without local conditioning ``local`` is ignored (may be None) and the result is [B, gate, 1]."""
        if self.local_proj is None:
            return self.global_proj(speaker)[:, :, None]
        return self.local_proj(local) + self.global_proj(speaker)[:, :, None]

    def forward(self, x: torch.Tensor, cond: torch.Tensor, hop_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, R, T], cond [B, gate, F] with T == F * hop_length."""
        batch, _, length = x.shape
        h = self.dilated(F.pad(x, (self.receptive_field, 0)))
        # add the frame-rate conditioning to every sample of its frame without materialising it
        h = (h.view(batch, -1, cond.shape[-1], hop_length) + cond[..., None]).view(batch, -1, length)
        return self._gate_and_project(x, h)

    def step(self, window: torch.Tensor, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step. window [B, R, k]: this layer's inputs at t-(k-1)d, ..., t-d, t (x is the
        last column); cond [B, gate] -> (x' [B, R], skip [B, S])."""
        bias = self.dilated.bias
        if bias is None:
            raise RuntimeError("the dilated convolution has no bias")
        h = torch.einsum("brk,grk->bg", window, self.dilated.weight) + bias + cond
        return self._gate_and_project(x, h)

    def _gate_and_project(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gated unit and the 1x1 residual/skip projection; channels on dim 1 ([B, C, T] or [B, C])."""
        a, b = h.chunk(2, dim=1)
        z = torch.tanh(a) * torch.sigmoid(b)
        out = self.out_proj(z) if z.dim() == 3 else F.linear(z, self.out_proj.weight[:, :, 0], self.out_proj.bias)
        residual, skip = out.split([self.residual_channels, out.shape[1] - self.residual_channels], dim=1)
        return (x + residual) * math.sqrt(0.5), skip


def residual_layers(layers: nn.ModuleList) -> list[ResidualLayer]:
    """The items of a ModuleList of :class:`ResidualLayer` (typed: a ModuleList yields plain Modules)."""
    typed = [layer for layer in layers if isinstance(layer, ResidualLayer)]
    if len(typed) != len(layers):
        raise TypeError("expected a ModuleList of ResidualLayer")
    return typed


class WaveNetDecoder(nn.Module):
    """p(x_t | x_<t, codes, speaker): previous samples [B, T] (mu-law classes) -> logits [B, C, T].

    ``forward`` takes the *input* sequence: position t holds the sample before the one predicted
    at t (teacher forcing shifts the target right by one). Output t depends only on inputs <= t.
    ``sample_rate`` is that of the audio it models (recorded, not used by the network).
    """

    def __init__(
        self,
        num_speakers: int,
        latent_dim: int = 64,
        hop_length: int = 160,
        sample_rate: int = 16000,
        classes: int = 256,
        residual_channels: int = 64,
        gate_channels: int = 128,
        skip_channels: int = 64,
        kernel_size: int = 2,
        layers: int = 20,
        cycles: int = 2,
        local_channels: int = 64,
        global_channels: int = 64,
        cond_kernel_size: int = 3,
    ):
        super().__init__()
        if layers % cycles:
            raise ValueError(f"wavenet layers={layers} is not a multiple of cycles={cycles}")
        self.classes, self.hop_length, self.sample_rate = classes, hop_length, sample_rate
        self.input_embedding = nn.Embedding(classes, residual_channels)
        self.speaker_embedding = nn.Embedding(num_speakers, global_channels)
        # a small non-causal net over the code vectors at frame rate, before upsampling
        self.local_net = nn.Sequential(
            nn.Conv1d(latent_dim, local_channels, cond_kernel_size, padding=cond_kernel_size // 2),
            nn.ReLU(),
            nn.Conv1d(local_channels, local_channels, cond_kernel_size, padding=cond_kernel_size // 2),
        )
        per_cycle = layers // cycles
        self.layers = nn.ModuleList(
            ResidualLayer(
                residual_channels,
                gate_channels,
                skip_channels,
                kernel_size,
                2 ** (i % per_cycle),
                local_channels,
                global_channels,
            )
            for i in range(layers)
        )
        self.output = nn.Sequential(
            nn.ReLU(), nn.Conv1d(skip_channels, skip_channels, 1), nn.ReLU(), nn.Conv1d(skip_channels, classes, 1)
        )  # 1x1 convs: per-sample MLP

    @property
    def receptive_field(self) -> int:
        return 1 + sum(layer.receptive_field for layer in residual_layers(self.layers))

    def local_conditioning(self, latents: torch.Tensor) -> torch.Tensor:
        """Code vectors [B, D, F] -> local conditioning [B, local_channels, F] (frame rate)."""
        return self.local_net(latents)

    def forward(self, inputs: torch.Tensor, latents: torch.Tensor, speakers: torch.Tensor) -> torch.Tensor:
        """inputs [B, T] long, latents [B, D, F] with T == F * hop_length, speakers: ids [B] or
        speaker vectors [B, global_channels] (:func:`speaker_vectors`) -> logits [B, C, T]."""
        if inputs.shape[-1] != latents.shape[-1] * self.hop_length:
            raise ValueError(
                f"decoder input has {inputs.shape[-1]} samples but {latents.shape[-1]} frames "
                f"x hop {self.hop_length} were given"
            )
        local = self.local_conditioning(latents)
        speaker = speaker_vectors(self.speaker_embedding, speakers)
        x = self.input_embedding(inputs).transpose(1, 2)
        skips = 0
        for layer in residual_layers(self.layers):
            x, skip = layer(x, layer.conditioning(local, speaker), self.hop_length)
            skips = skips + skip
        return self.output(skips * math.sqrt(1.0 / len(self.layers)))

    def teacher_forcing_inputs(self, targets: torch.Tensor) -> torch.Tensor:
        """targets [B, T] -> the inputs that predict them: shifted right by one, from silence."""
        return F.pad(targets[:, :-1], (1, 0), value=self.classes // 2)

    def reconstruct(
        self, audio: torch.Tensor, latents: torch.Tensor, speakers: torch.Tensor, mask: torch.Tensor | None = None
    ) -> TeacherForcedOutput:
        """The training objective: audio [B, T] with T == F * hop_length, latents [B, D, F],
        speakers [B], optional mask [B, T] (1 = real sample) -> teacher-forced cross-entropy."""
        targets = mu_law_encode(audio, self.classes)
        logits = self(self.teacher_forcing_inputs(targets), latents, speakers)
        nll = F.cross_entropy(logits.float(), targets, reduction="none")
        if mask is not None:
            weights = mask.to(nll.dtype)
            nll = (nll * weights).sum() / weights.sum().clamp_min(1.0)
        else:
            nll = nll.mean()
        return TeacherForcedOutput(logits, targets, nll, nll.detach() / math.log(2))

    @property
    def output_convs(self) -> tuple[nn.Conv1d, nn.Conv1d]:
        """The output head's two 1x1 convolutions (``output[1]`` and ``output[3]``)."""
        first, second = self.output[1], self.output[3]
        if not (isinstance(first, nn.Conv1d) and isinstance(second, nn.Conv1d)):
            raise TypeError("the output head is not ReLU, Conv1d, ReLU, Conv1d")
        return first, second

    def output_step(self, skips: torch.Tensor) -> torch.Tensor:
        """The output head for one time step: summed skips [B, S] -> logits [B, classes]."""
        h = torch.relu(skips * math.sqrt(1.0 / len(self.layers)))
        first, second = self.output_convs
        h = torch.relu(F.linear(h, first.weight[:, :, 0], first.bias))
        return F.linear(h, second.weight[:, :, 0], second.bias)
