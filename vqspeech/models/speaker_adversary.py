"""A speaker classifier on the encoder's latents, trained through gradient reversal (Ganin and
Lempitsky, 2015, "Unsupervised domain adaptation by backpropagation").

The classifier learns to name the speaker of every latent frame; between it and the encoder sits
a gradient reversal layer, identity in the forward pass and ``-weight`` times the gradient in the
backward pass, so the same loss that trains the classifier pushes the encoder to remove what the
classifier reads. The decoder gets the speaker from its own embedding, so the codes need not
carry it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.weight * grad, None


def reverse_gradient(x: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """Identity forward; the gradient times ``-weight`` backward."""
    return _ReverseGradient.apply(x, weight)


@dataclass
class AdversaryOutput:
    loss: torch.Tensor  # cross-entropy of the speaker over the frames, with its graph
    accuracy: torch.Tensor  # fraction of frames whose speaker the classifier names (detached)


class SpeakerAdversary(nn.Module):
    """latents [B, D, F] + speaker ids [B] -> :class:`AdversaryOutput`, the encoder's gradient
    reversed and scaled by ``weight``. A two-layer frame classifier (kernel 3 then 1)."""

    def __init__(self, latent_dim: int, num_speakers: int, weight: float = 1.0, hidden: int = 128):
        super().__init__()
        self.weight = weight
        self.classifier = nn.Sequential(
            nn.Conv1d(latent_dim, hidden, 3, padding=1), nn.ReLU(), nn.Conv1d(hidden, num_speakers, 1)
        )

    def forward(self, latents: torch.Tensor, speakers: torch.Tensor) -> AdversaryOutput:
        logits = self.classifier(reverse_gradient(latents, self.weight))  # [B, S, F]
        target = speakers[:, None].expand(-1, logits.shape[-1])
        loss = F.cross_entropy(logits, target)
        accuracy = (logits.detach().argmax(1) == target).float().mean()
        return AdversaryOutput(loss, accuracy)
