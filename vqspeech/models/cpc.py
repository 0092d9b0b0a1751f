"""The ``cpc`` unit objective: VQ-CPC (van Niekerk, Nortje and Kamper, 2020, "Vector-quantized
neural networks for acoustic unit discovery in the ZeroSpeech 2020 challenge").

An autoregressive context network (a GRU) reads the quantized frames; from its state at frame t a
linear predictor per step k = 1..K predicts the quantized frame t + k. The InfoNCE loss scores each
prediction against the true frame and ``negatives`` frames drawn from *other utterances of the same
speaker* in the batch: the codes cannot win by encoding who speaks (every candidate shares the
voice), only by encoding what is said. Batches therefore hold several crops per speaker
(``train.speakers_per_batch``). A crop whose speaker has no other crop in the batch draws its
negatives from its own frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .frontend import real_frames


@dataclass
class CPCOutput:
    loss: torch.Tensor  # InfoNCE averaged over prediction steps and real frames, with its graph
    accuracy: torch.Tensor  # fraction of predictions that score the true frame highest (detached)


def same_speaker_negatives(
    speakers: torch.Tensor, lengths: torch.Tensor, frames: int, num: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the negatives of every frame come from: (crop [B, frames, num], frame [B, frames, num]).

    speakers [B], lengths [B] (real frames per crop). Crop b's negatives are frames drawn uniformly
    from the real frames of the other crops of its speaker (each crop weighted by its length), or
    of itself when there are none.
    """
    batch = len(speakers)
    crops = torch.empty(batch, frames, num, dtype=torch.long)
    times = torch.empty(batch, frames, num, dtype=torch.long)
    for b in range(batch):
        others = [c for c in range(batch) if c != b and speakers[c] == speakers[b] and lengths[c] > 0]
        pool = torch.tensor(others or [b])
        weights = lengths[pool].float().clamp_min(1.0)
        pick = pool[torch.multinomial(weights, frames * num, replacement=True)].view(frames, num)
        crops[b] = pick
        times[b] = (torch.rand(frames, num) * lengths[pick].clamp_min(1)).long()
    return crops, times


class CPCHead(nn.Module):
    """Quantized frames [B, D, F] + speaker ids [B] -> :class:`CPCOutput`.

    Args:
        num_speakers, sample_rate, hop_length: accepted for the objectives' common signature;
            the head needs none of them.
        latent_dim: D.
        context_channels: the GRU's size.
        prediction_steps: K, how many frames ahead are predicted.
        negatives: frames each prediction is scored against besides the true one.
    """

    def __init__(
        self,
        num_speakers: int,
        latent_dim: int,
        sample_rate: int,
        hop_length: int,
        context_channels: int = 256,
        prediction_steps: int = 6,
        negatives: int = 17,
    ):
        super().__init__()
        self.hop_length = hop_length
        self.steps, self.negatives = prediction_steps, negatives
        self.context = nn.GRU(latent_dim, context_channels, batch_first=True)
        self.predictors = nn.Linear(context_channels, latent_dim * prediction_steps)

    def reconstruct(
        self, audio: torch.Tensor, latents: torch.Tensor, speakers: torch.Tensor, mask: torch.Tensor | None = None
    ) -> CPCOutput:
        """The training objective; audio is unused but for its mask ([B, F * hop], 1 = real)."""
        batch, dim, frames = latents.shape
        z = latents.transpose(1, 2)  # [B, F, D]
        if mask is None:
            real = torch.ones(batch, frames, dtype=torch.bool, device=z.device)
        else:
            real = real_frames(mask, frames, self.hop_length)
        lengths = real.sum(1)
        context, _ = self.context(z)
        predictions = self.predictors(context).view(batch, frames, self.steps, dim)
        crops, times = same_speaker_negatives(speakers.cpu(), lengths.cpu(), frames, self.negatives)
        negatives = z[crops.to(z.device), times.to(z.device)]  # [B, F, N, D]
        losses, right, counted = [], z.new_zeros(()), z.new_zeros(())
        for k in range(1, min(self.steps, frames - 1) + 1):
            prediction = predictions[:, : frames - k, k - 1]  # [B, F-k, D]
            positive = (prediction * z[:, k:]).sum(-1, keepdim=True)  # [B, F-k, 1]
            negative = torch.einsum("btd,btnd->btn", prediction, negatives[:, : frames - k])
            logits = torch.cat([positive, negative], -1)
            valid = real[:, k:]  # the target frame is real (so is the context's frame)
            if not valid.any():
                continue
            target = torch.zeros(int(valid.sum()), dtype=torch.long, device=z.device)
            losses.append(F.cross_entropy(logits[valid], target))
            right = right + (logits[valid].detach().argmax(-1) == 0).sum()
            counted = counted + valid.sum()
        if not losses:
            raise ValueError(f"CPC needs crops of more than one frame (got {frames})")
        return CPCOutput(torch.stack(losses).mean(), right / counted.clamp_min(1))
