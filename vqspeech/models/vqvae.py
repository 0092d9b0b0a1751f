"""The VQ-VAE: encoder -> vector quantizer -> speaker-conditioned decoder.

``model.decoder_type`` picks the decoder: ``wavenet`` (autoregressive, teacher-forced
cross-entropy over mu-law classes; the default, and what a config without the key means) or
``conv`` (:class:`ConvDecoder`, non-autoregressive, trained on a multi-scale log-mel L1 loss plus
the adversarial terms the training task adds; see ``tasks.py``).

``model.top.stride`` > 0 adds a top level of codes at 1/stride of the code rate (VQ-VAE-2; see
``hierarchy.py``): the bottom quantizer's input is conditioned on the top codes and the decoder
reads both levels.
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
from .hierarchy import TopLevel
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
    top: QuantizerOutput | None = None   # hierarchical: the top level (codes [B, ceil(F / stride)])


@dataclass
class Quantized:
    """Both code levels of a batch. A one-level model has ``top`` None and decodes ``vq.quantized``."""

    vq: QuantizerOutput              # the (bottom) codes [B, F] (grouped: [B, F, G])
    latents: torch.Tensor            # the (bottom) quantizer's input z [B, D, F]
    decoder_latents: torch.Tensor    # what the decoder reads [B, D, F] (straight-through)
    top: QuantizerOutput | None = None  # hierarchical: codes [B, ceil(F / stride)]

    @property
    def loss(self) -> torch.Tensor:
        return self.vq.loss if self.top is None else self.vq.loss + self.top.loss


class VQVAE(nn.Module):
    """audio [B, T] in [-1, 1] + speaker ids [B] -> next-sample logits (wavenet) or a waveform (conv).

    ``jitter``: time-jitter probability applied to the quantized latents in training (0 = off).
    """

    def __init__(self, encoder: Encoder, quantizer: nn.Module, decoder: WaveNetDecoder | ConvDecoder,
                 sample_rate: int, jitter: float = 0.0, mel_weight: float = 1.0, top: TopLevel | None = None):
        super().__init__()
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder
        self.top = top
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
        top_cfg = dict(config.get("top") or {})  # configs from before the switch: one level
        top = None
        if top_cfg.get("stride", 0):
            top = TopLevel(dim, top_cfg.pop("stride"), quantizer={**config["quantizer"], "groups": 1}, **top_cfg)
        return cls(
            encoder=encoder,
            quantizer=quantizer,
            decoder=decoder,
            sample_rate=config["sample_rate"],
            jitter=config.get("jitter", 0.0),
            top=top,
        )

    @property
    def code_rate_hz(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def top_stride(self) -> int:
        """Bottom codes per top code (0: one level)."""
        return 0 if self.top is None else self.top.stride

    @property
    def context_frames(self) -> int:
        """Code frames on each side that can change a code: chunks overlapping by this much encode
        exactly like one pass (a multiple of the top stride when there is a top level)."""
        if self.top is None:
            return self.encoder.context_frames
        frames = self.encoder.context_frames + self.top.context_frames
        return -(-frames // self.top.stride) * self.top.stride

    def quantize_latents(self, latents: torch.Tensor) -> Quantized:
        """Encoder latents [B, D, F] -> both code levels and the decoder's input."""
        if self.top is None:
            vq = self.quantizer(latents)
            return Quantized(vq, latents, vq.quantized)
        top, upsampled, latents = self.top.quantize(latents)
        vq = self.quantizer(latents)
        return Quantized(vq, latents, self.top.decoder_input(vq.quantized, upsampled), top)

    def quantize(self, audio: torch.Tensor) -> Quantized:
        """audio [B, T] -> both code levels (codes [B, T // hop_length]) and the decoder's input."""
        return self.quantize_latents(self.encoder(audio))

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, T] -> codes [B, T // hop_length] (grouped codebooks: [B, T // hop_length, G];
        the bottom level of a hierarchical model)."""
        return self.quantize(audio).vq.codes

    def decoder_latents(self, codes: torch.Tensor, top_codes: torch.Tensor | None = None) -> torch.Tensor:
        """Codes [B, F] (grouped: [B, F, G]) and, for a hierarchical model, top codes
        [B, ceil(F / stride)] -> the decoder's input [B, D, F]."""
        quantized = self.quantizer.lookup(codes)
        if self.top is None:
            return quantized
        if top_codes is None:
            raise ValueError("a hierarchical model decodes from both code levels; top codes are missing")
        upsampled = self.top.upsample(self.top.quantizer.lookup(top_codes), quantized.shape[-1])
        return self.top.decoder_input(quantized, upsampled)

    def decoder_inputs(self, targets: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: targets [B, T] -> inputs shifted right by one, starting from silence."""
        silence = self.decoder.classes // 2
        return F.pad(targets[:, :-1], (1, 0), value=silence)

    def forward(self, audio: torch.Tensor, speakers: torch.Tensor,
                mask: torch.Tensor | None = None) -> VQVAEOutput:
        """audio [B, T], speakers [B], optional mask [B, T] (1 = real sample, 0 = padding)."""
        length = audio.shape[-1] // self.hop_length * self.hop_length
        audio = audio[:, :length]
        q = self.quantize(audio)
        latents = self.jitter(q.decoder_latents)
        if self.decoder_type == "conv":
            waveform = self.decoder(latents, speakers)
            if mask is not None:
                mask = mask[:, :length]
            mel = self.mel_loss(waveform, audio, mask)
            return VQVAEOutput(None, None, q.vq, None, self.mel_weight * mel + q.loss, waveform=waveform,
                               target_audio=audio, mel_loss=mel, mask=mask, top=q.top)
        targets = mu_law_encode(audio, self.decoder.classes)
        logits = self.decoder(self.decoder_inputs(targets), latents, speakers)
        nll = F.cross_entropy(logits.float(), targets, reduction="none")
        if mask is not None:
            mask = mask[:, :length].to(nll.dtype)
            nll = (nll * mask).sum() / mask.sum().clamp_min(1.0)
        else:
            nll = nll.mean()
        return VQVAEOutput(logits, targets, q.vq, nll.detach() / math.log(2), nll + q.loss, top=q.top)
