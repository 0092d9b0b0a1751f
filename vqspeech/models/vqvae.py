"""The VQ-VAE: encoder -> vector quantizer -> speaker-conditioned decoder.

``model.decoder_type`` picks the decoder: ``wavenet`` (autoregressive, teacher-forced
cross-entropy over mu-law classes; the default, and what a config without the key means) or
``conv`` (:class:`ConvDecoder`, non-autoregressive, trained on a multi-scale log-mel L1 loss plus
the adversarial terms the training task adds; see ``tasks.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..audio import mu_law_encode
from .conv_decoder import ConvDecoder
from .encoder import Encoder
from .gan_losses import MultiScaleMelLoss
from .jitter import TimeJitter
from .quantizer import QuantizerOutput, build_quantizer
from .wavenet import WaveNetDecoder


DECODER_TYPES = ("wavenet", "conv")


@dataclass
class VQVAEOutput:
    logits: torch.Tensor | None    # [B, classes, T] (wavenet; None for conv)
    targets: torch.Tensor | None   # [B, T] mu-law classes (wavenet; None for conv)
    vq: QuantizerOutput
    bits_per_sample: torch.Tensor | None  # wavenet: mean teacher-forced cross-entropy in bits (unmasked samples)
    loss: torch.Tensor         # wavenet: cross-entropy (nats) + quantizer loss; conv: mel_weight * mel_loss + quantizer loss
    waveform: torch.Tensor | None = None  # conv: the generated audio [B, T] (with its graph)
    target_audio: torch.Tensor | None = None  # conv: the input audio cut to whole frames [B, T]
    mel_loss: torch.Tensor | None = None  # conv: unweighted multi-scale log-mel L1 (masked), with its graph
    mask: torch.Tensor | None = None     # conv: the mask cut to whole frames, when one was given


class VQVAE(nn.Module):
    """audio [B, T] in [-1, 1] + speaker ids [B] -> next-sample logits (wavenet) or a waveform (conv).

    ``jitter``: time-jitter probability applied to the quantized latents in training (0 = off).
    """

    def __init__(self, encoder: Encoder, quantizer: nn.Module, decoder: WaveNetDecoder | ConvDecoder,
                 sample_rate: int, jitter: float = 0.0, mel_weight: float = 1.0):
        super().__init__()
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder
        self.jitter = TimeJitter(jitter)
        self.sample_rate = sample_rate
        self.hop_length = encoder.hop_length
        self.decoder_type = "conv" if isinstance(decoder, ConvDecoder) else "wavenet"
        # conv only: weight of the mel loss in ``loss`` (the trainer sets train.adversarial.mel_weight);
        # the filterbanks are non-persistent buffers, so the state dict holds no extra keys
        self.mel_weight = mel_weight
        self.mel_loss = MultiScaleMelLoss(sample_rate) if self.decoder_type == "conv" else None

    @classmethod
    def from_config(cls, config: dict[str, Any], num_speakers: int) -> "VQVAE":
        """Build from a plain dict shaped like ``conf/model/*.yaml``."""
        hop, dim = config["hop_length"], config["latent_dim"]
        decoder_type = config.get("decoder_type", "wavenet")  # configs from before the switch: wavenet
        if decoder_type not in DECODER_TYPES:
            raise ValueError(f"decoder_type {decoder_type!r} is not one of {', '.join(DECODER_TYPES)}")
        # built in this order (encoder, quantizer, decoder) so a seed gives the same weights as before
        encoder = Encoder(config["sample_rate"], hop, latent_dim=dim, **config["encoder"])
        quantizer = build_quantizer(config["num_codes"], dim, **config["quantizer"])
        if decoder_type == "wavenet":
            decoder = WaveNetDecoder(num_speakers, latent_dim=dim, hop_length=hop, **config["decoder"])
        else:
            decoder = ConvDecoder(num_speakers, latent_dim=dim, hop_length=hop, **config["conv_decoder"])
        return cls(
            encoder=encoder,
            quantizer=quantizer,
            decoder=decoder,
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
        if self.decoder_type == "conv":
            waveform = self.decoder(self.jitter(vq.quantized), speakers)
            if mask is not None:
                mask = mask[:, :length]
            mel = self.mel_loss(waveform, audio, mask)
            return VQVAEOutput(None, None, vq, None, self.mel_weight * mel + vq.loss, waveform=waveform,
                               target_audio=audio, mel_loss=mel, mask=mask)
        targets = mu_law_encode(audio, self.decoder.classes)
        logits = self.decoder(self.decoder_inputs(targets), self.jitter(vq.quantized), speakers)
        nll = F.cross_entropy(logits.float(), targets, reduction="none")
        if mask is not None:
            mask = mask[:, :length].to(nll.dtype)
            nll = (nll * mask).sum() / mask.sum().clamp_min(1.0)
        else:
            nll = nll.mean()
        return VQVAEOutput(logits, targets, vq, nll.detach() / math.log(2), nll + vq.loss)
