"""A speaker encoder: reference audio of a voice -> one speaker vector for the waveform decoder.

The waveform decoders take their global condition as speaker ids [B] (rows of their speaker
table) or as speaker vectors [B, G] (:func:`speaker_vectors`). With ``model.speaker_encoder``
on, training conditions a share of its crops on the :class:`SpeakerEncoder`'s vector of a
*reference*: another utterance of the crop's speaker (or another segment of the same utterance
where the speaker has one), so content cannot leak through it. The rest keep the table's row, so
the two live in the same space and a known speaker's name still works; a voice never seen in
training is given by a few seconds of its audio (zero-shot conversion).

The encoder is a log-mel front end (10 ms frames), a stack of non-causal dilated residual blocks
and mean + standard-deviation pooling over the real frames, projected to G: a statistic of the
whole reference, so its length changes the vector only through the statistics' estimate (the
receptive field's edges and the speech it holds).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .encoder import ResidualDilatedBlock
from .frontend import LogMelFrontend, real_frames


def speaker_vectors(table: nn.Embedding, speakers: torch.Tensor) -> torch.Tensor:
    """The decoders' global condition: speaker ids [B] (long: rows of ``table``) or speaker
    vectors [B, G] (float, e.g. a :class:`SpeakerEncoder`'s, passed through) -> [B, G]."""
    if speakers.is_floating_point():
        if speakers.dim() != 2 or speakers.shape[1] != table.embedding_dim:
            raise ValueError(f"speaker vectors must be [B, {table.embedding_dim}], not {tuple(speakers.shape)}")
        return speakers
    return table(speakers)


class SpeakerEncoder(nn.Module):
    """Reference audio [B, T] (+ mask [B, T], 1 = real sample) -> speaker vectors [B, global_channels].

    Args:
        sample_rate: the model's.
        global_channels: G, the decoder's speaker-vector size.
        n_mels: mel bands of the front end (10 ms hop, 20 ms window).
        channels: width of the residual stack.
        dilations: one non-causal residual block (kernel 3) per entry.
    """

    def __init__(
        self,
        sample_rate: int,
        global_channels: int,
        n_mels: int = 40,
        channels: int = 128,
        dilations: Sequence[int] = (1, 2, 4),
    ):
        super().__init__()
        self.hop_length = max(1, sample_rate // 100)
        self.frontend = LogMelFrontend(sample_rate, self.hop_length, n_mels)
        self.input_proj = nn.Conv1d(n_mels, channels, 3, padding=1)
        self.blocks = nn.Sequential(*(ResidualDilatedBlock(channels, d) for d in dilations))
        self.output = nn.Linear(2 * channels, global_channels)

    def forward(self, audio: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """audio [B, T] (at least one 10 ms frame), optional mask [B, T] -> [B, G]."""
        frames = audio.shape[-1] // self.hop_length
        x = torch.relu(self.blocks(self.input_proj(self.frontend(audio[:, : frames * self.hop_length]))))
        if mask is None:
            weights = x.new_ones(x.shape[0], 1, frames)
        else:
            weights = real_frames(mask, frames, self.hop_length).to(x.dtype)[:, None]
        count = weights.sum(-1).clamp_min(1.0)
        mean = (x * weights).sum(-1) / count
        std = (((x - mean[..., None]) ** 2 * weights).sum(-1) / count).clamp_min(1e-8).sqrt()
        return self.output(torch.cat([mean, std], dim=1))
