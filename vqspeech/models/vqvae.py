"""The VQ-VAE: encoder -> vector quantizer -> speaker-conditioned WaveNet decoder."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..audio import mu_law_encode
from .encoder import Encoder
from .jitter import TimeJitter
from .quantizer import QuantizerOutput, build_quantizer
from .wavenet import WaveNetDecoder


@dataclass
class VQVAEOutput:
    logits: torch.Tensor       # [B, classes, T]
    targets: torch.Tensor      # [B, T] mu-law classes
    vq: QuantizerOutput
    bits_per_sample: torch.Tensor  # mean teacher-forced cross-entropy in bits (over unmasked samples)
    loss: torch.Tensor         # reconstruction (nats) + quantizer loss


class VQVAE(nn.Module):
    """audio [B, T] in [-1, 1] + speaker ids [B] -> next-sample logits; T a multiple of hop_length.

    ``jitter``: time-jitter probability applied to the quantized latents in training (0 = off).
    """

    def __init__(self, encoder: Encoder, quantizer: nn.Module, decoder: WaveNetDecoder,
                 sample_rate: int, jitter: float = 0.0):
        super().__init__()
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder
        self.jitter = TimeJitter(jitter)
        self.sample_rate = sample_rate
        self.hop_length = encoder.hop_length

    @classmethod
    def from_config(cls, config: dict[str, Any], num_speakers: int) -> "VQVAE":
        """Build from a plain dict shaped like ``conf/model/*.yaml``."""
        hop, dim = config["hop_length"], config["latent_dim"]
        return cls(
            encoder=Encoder(config["sample_rate"], hop, latent_dim=dim, **config["encoder"]),
            quantizer=build_quantizer(config["num_codes"], dim, **config["quantizer"]),
            decoder=WaveNetDecoder(num_speakers, latent_dim=dim, hop_length=hop, **config["decoder"]),
            sample_rate=config["sample_rate"],
            jitter=config.get("jitter", 0.0),
        )

    @property
    def code_rate_hz(self) -> float:
        return self.sample_rate / self.hop_length

    def quantize(self, audio: torch.Tensor) -> tuple[QuantizerOutput, torch.Tensor]:
        """audio [B, T] -> (quantizer output with codes [B, F], latents z [B, D, F])."""
        latents = self.encoder(audio)
        return self.quantizer(latents), latents

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, T] -> codes [B, T // hop_length] (grouped codebooks: [B, T // hop_length, G])."""
        return self.quantize(audio)[0].codes

    def decoder_inputs(self, targets: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: targets [B, T] -> inputs shifted right by one, starting from silence."""
        silence = self.decoder.classes // 2
        return F.pad(targets[:, :-1], (1, 0), value=silence)

    def forward(self, audio: torch.Tensor, speakers: torch.Tensor,
                mask: torch.Tensor | None = None) -> VQVAEOutput:
        """audio [B, T], speakers [B], optional mask [B, T] (1 = real sample, 0 = padding)."""
        length = audio.shape[-1] // self.hop_length * self.hop_length
        audio = audio[:, :length]
        vq, _ = self.quantize(audio)
        targets = mu_law_encode(audio, self.decoder.classes)
        logits = self.decoder(self.decoder_inputs(targets), self.jitter(vq.quantized), speakers)
        nll = F.cross_entropy(logits.float(), targets, reduction="none")
        if mask is not None:
            mask = mask[:, :length].to(nll.dtype)
            nll = (nll * mask).sum() / mask.sum().clamp_min(1.0)
        else:
            nll = nll.mean()
        return VQVAEOutput(logits, targets, vq, nll.detach() / math.log(2), nll + vq.loss)
