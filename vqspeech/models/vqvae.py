"""The VQ-VAE: encoder -> vector quantizer -> speaker-conditioned decoder.

``model.decoder_type`` names the decoder in :data:`DECODERS`: ``wavenet`` (autoregressive,
trained by teacher-forced cross-entropy over mu-law classes) or ``conv`` (:class:`ConvDecoder`,
non-autoregressive, trained on a multi-scale log-mel L1 loss plus the adversarial terms the
training task adds). Each decoder's ``reconstruct`` is its training objective and says by its
output type what it returns.

``model.objective`` says what the units are learned through: ``wavenet`` (the paper's end-to-end
VQ-VAE: the waveform decoder's loss trains encoder, quantizer and decoder together), ``mel``
(:class:`MelDecoder`, a small non-autoregressive log-mel predictor) or ``cpc`` (:class:`CPCHead`,
VQ-CPC's contrastive prediction of future codes against frames of the same speaker); the heads
are in :data:`OBJECTIVES`. Units
learned through a head other than the waveform decoder are trained in two stages
(:data:`STAGES`, chosen with :meth:`VQVAE.set_stage`): ``units`` trains the encoder, quantizer and
head; ``decoder`` trains the waveform decoder on the frozen codes.

``model.top.stride`` > 0 adds a top level of codes at 1/stride of the code rate (VQ-VAE-2; see
``hierarchy.py``): the bottom quantizer's input is conditioned on the top codes and the decoder
reads both levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .conv_decoder import ConvDecoder, WaveformOutput
from .cpc import CPCHead, CPCOutput
from .encoder import Encoder
from .hierarchy import TopLevel
from .jitter import TimeJitter
from .mel_decoder import MelDecoder, MelOutput
from .quantizer import Quantizer, QuantizerOutput, build_quantizer
from .speaker_adversary import AdversaryOutput, SpeakerAdversary
from .speaker_encoder import SpeakerEncoder, speaker_vectors
from .wavenet import TeacherForcedOutput, WaveNetDecoder

DECODERS: dict[str, type[WaveNetDecoder] | type[ConvDecoder]] = {"wavenet": WaveNetDecoder, "conv": ConvDecoder}
"""``model.decoder_type`` -> decoder class, built as ``cls(num_speakers, latent_dim=D,
hop_length=hop, sample_rate=sr, **options)`` with the options of its config block
(:data:`DECODER_OPTIONS`)."""

DECODER_OPTIONS = {"wavenet": "decoder", "conv": "conv_decoder"}
"""``model.decoder_type`` -> the block of the model config that holds that decoder's options."""


OBJECTIVES: dict[str, type[MelDecoder] | type[CPCHead] | None] = {"wavenet": None, "mel": MelDecoder, "cpc": CPCHead}
"""``model.objective`` -> the head the units are learned through besides the waveform decoder
(None: the waveform decoder itself), built as ``cls(num_speakers, latent_dim=D, sample_rate=sr,
hop_length=hop, **options)`` with the options of its config block (:data:`OBJECTIVE_OPTIONS`)."""

OBJECTIVE_OPTIONS = {"mel": "mel_decoder", "cpc": "cpc"}
"""``model.objective`` -> the block of the model config that holds its head's options."""

STAGES = {
    "joint": "encoder, quantizer and waveform decoder together (objective wavenet)",
    "units": "encoder, quantizer and the objective's head; the waveform decoder untouched",
    "decoder": "the waveform decoder on frozen codes; encoder, quantizer and head untouched",
}
"""What each training stage trains (:meth:`VQVAE.set_stage`)."""


def config_in_use(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a model config that :meth:`VQVAE.from_config` reads: the chosen decoder's block
    only, and no top-level options when there is no top level. Two configs build the same model
    exactly when these are equal."""
    unused = [block for name, block in DECODER_OPTIONS.items() if name != config.get("decoder_type")]
    unused += [block for name, block in OBJECTIVE_OPTIONS.items() if name != config.get("objective", "wavenet")]
    used = {k: v for k, v in config.items() if k not in unused}
    if isinstance(used.get("top"), dict) and not used["top"].get("stride"):
        used["top"] = {"stride": 0}
    if isinstance(used.get("speaker_adversary"), dict) and not used["speaker_adversary"].get("weight"):
        used["speaker_adversary"] = {"weight": 0}
    if isinstance(used.get("speaker_encoder"), dict) and not used["speaker_encoder"].get("share"):
        used["speaker_encoder"] = {"share": 0}
    return used


@dataclass
class Quantized:
    """Both code levels of a batch. A one-level model has ``top`` None."""

    vq: QuantizerOutput  # the (bottom) codes [B, F] (grouped: [B, F, G])
    latents: torch.Tensor  # the (bottom) quantizer's input z [B, D, F]
    decoder_input: torch.Tensor  # what the decoder reads [B, D, F] (straight-through)
    top: QuantizerOutput | None = None  # hierarchical: codes [B, ceil(F / stride)]

    @property
    def loss(self) -> torch.Tensor:
        """The quantizer losses of both levels."""
        return self.vq.loss if self.top is None else self.vq.loss + self.top.loss


@dataclass
class VQVAEOutput:
    """One training forward pass: ``loss`` = the decoder's reconstruction loss + the quantizer
    losses (none in the ``decoder`` stage, whose codes are frozen), the codes of both levels, and
    what the trained objective returned (:class:`TeacherForcedOutput` for a ``wavenet`` decoder,
    :class:`WaveformOutput` for ``conv``, :class:`MelOutput` or :class:`CPCOutput` for the ``mel``
    or ``cpc`` head in the ``units`` stage), and the speaker adversary's loss (part of ``loss``) when there is one."""

    loss: torch.Tensor
    vq: QuantizerOutput
    top: QuantizerOutput | None
    reconstruction: TeacherForcedOutput | WaveformOutput | MelOutput | CPCOutput
    adversary: AdversaryOutput | None = None  # the speaker classifier's, when model.speaker_adversary is on

    @property
    def quantizer_loss(self) -> torch.Tensor:
        return self.vq.loss if self.top is None else self.vq.loss + self.top.loss


class VQVAE(nn.Module):
    """audio [B, T] in [-1, 1] + speaker ids [B] -> codes and the decoder's reconstruction.

    ``jitter``: time-jitter probability applied to the quantized latents in training (0 = off).
    ``units_head``: the objective's head (:data:`OBJECTIVES`; None for ``wavenet``).
    ``speaker_adversary``: a speaker classifier on the latents trained through gradient reversal
    (None: off).
    ``speaker_encoder``: reference audio -> a speaker vector for the waveform decoder, beside its
    speaker table (None: off; see :meth:`speaker_condition`).
    """

    def __init__(
        self,
        encoder: Encoder,
        quantizer: Quantizer,
        decoder: WaveNetDecoder | ConvDecoder,
        sample_rate: int,
        jitter: float = 0.0,
        top: TopLevel | None = None,
        units_head: MelDecoder | CPCHead | None = None,
        speaker_adversary: SpeakerAdversary | None = None,
        speaker_encoder: SpeakerEncoder | None = None,
    ):
        super().__init__()
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder
        self.top = top
        self.units_head = units_head
        self.speaker_adversary = speaker_adversary
        self.speaker_encoder = speaker_encoder
        self.stage = "joint"
        self.jitter = TimeJitter(jitter)
        self.sample_rate = sample_rate
        self.hop_length = encoder.hop_length
        self.decoder_type = next(name for name, cls in DECODERS.items() if isinstance(decoder, cls))
        self.set_stage("joint" if units_head is None else "units")

    @classmethod
    def from_config(cls, config: dict[str, Any], num_speakers: int) -> VQVAE:
        """Build from a plain dict shaped like ``conf/model/*.yaml``."""
        hop, dim, rate = config["hop_length"], config["latent_dim"], config["sample_rate"]
        decoder_type = config["decoder_type"]
        if decoder_type not in DECODERS:
            raise ValueError(f"decoder_type {decoder_type!r} is not one of {', '.join(DECODERS)}")
        # built in this order (encoder, quantizer, decoder, top level): a seed fixes the weights
        encoder = Encoder(rate, hop, latent_dim=dim, **config["encoder"])
        quantizer = build_quantizer(config["num_codes"], dim, **config["quantizer"])
        decoder = DECODERS[decoder_type](
            num_speakers, latent_dim=dim, hop_length=hop, sample_rate=rate, **config[DECODER_OPTIONS[decoder_type]]
        )
        top_cfg = dict(config["top"])
        top = None
        if top_cfg.pop("stride"):
            top = TopLevel(dim, config["top"]["stride"], quantizer={**config["quantizer"], "groups": 1}, **top_cfg)
        objective = config["objective"]
        if objective not in OBJECTIVES:
            raise ValueError(f"objective {objective!r} is not one of {', '.join(OBJECTIVES)}")
        head_cls, units_head = OBJECTIVES[objective], None
        if head_cls is not None:
            options = config[OBJECTIVE_OPTIONS[objective]]
            units_head = head_cls(num_speakers, latent_dim=dim, sample_rate=rate, hop_length=hop, **options)
        adversary = None
        if config["speaker_adversary"]["weight"] > 0:
            adversary = SpeakerAdversary(dim, num_speakers, **config["speaker_adversary"])
        encoder_cfg = dict(config["speaker_encoder"])
        speaker_encoder = None
        if encoder_cfg.pop("share") > 0:
            del encoder_cfg["reference_seconds"]  # the data's concern
            global_channels = config[DECODER_OPTIONS[decoder_type]]["global_channels"]
            speaker_encoder = SpeakerEncoder(rate, global_channels, **encoder_cfg)
        return cls(
            encoder=encoder,
            quantizer=quantizer,
            decoder=decoder,
            sample_rate=rate,
            jitter=config["jitter"],
            top=top,
            units_head=units_head,
            speaker_adversary=adversary,
            speaker_encoder=speaker_encoder,
        )

    def unit_modules(self) -> list[nn.Module]:
        """The modules that make the codes (encoder, quantizer, top level), the objective's head and
        the speaker adversary."""
        parts = (self.encoder, self.quantizer, self.top, self.units_head, self.speaker_adversary)
        return [m for m in parts if m is not None]

    def set_stage(self, stage: str) -> None:
        """Choose what training trains (:data:`STAGES`): the other parts get no gradients and stay in
        eval mode (a frozen quantizer neither moves its codebook nor re-seeds codes)."""
        if stage not in STAGES:
            raise ValueError(f"stage {stage!r} is not one of {', '.join(STAGES)}")
        if stage == "units" and self.units_head is None:
            raise ValueError("the units stage needs an objective head (model.objective is wavenet)")
        if stage == "joint" and self.units_head is not None:
            raise ValueError("a model with an objective head trains in the units and decoder stages, not jointly")
        self.stage = stage
        self.requires_grad_(True)
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.train(self.training)

    def frozen_modules(self) -> list[nn.Module]:
        """What the current stage does not train."""
        if self.stage == "units":
            return [m for m in (self.decoder, self.speaker_encoder) if m is not None]
        if self.stage == "decoder":
            return self.unit_modules()
        return []

    def train(self, mode: bool = True) -> VQVAE:
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

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

    def quantize(self, audio: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> Quantized:
        """audio [B, T] -> both code levels (codes [B, T // hop_length]) and the decoder's input.
        ``stats``: the whole utterance's feature statistics for a normalising encoder that sees a
        chunk of it (:meth:`Encoder.feature_stats`)."""
        return self.quantize_latents(self.encoder(audio, stats))

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, T] -> codes [B, T // hop_length] (grouped codebooks: [B, T // hop_length, G];
        the bottom level of a hierarchical model)."""
        return self.quantize(audio).vq.codes

    def embed_codes(self, codes: torch.Tensor, top_codes: torch.Tensor | None = None) -> torch.Tensor:
        """Codes [B, F] (grouped: [B, F, G]) and, for a hierarchical model, top codes
        [B, ceil(F / stride)] -> the decoder's input [B, D, F]."""
        quantized = self.quantizer.lookup(codes)
        if self.top is None:
            return quantized
        if top_codes is None:
            raise ValueError("a hierarchical model decodes from both code levels; top codes are missing")
        upsampled = self.top.upsample(self.top.quantizer.lookup(top_codes), quantized.shape[-1])
        return self.top.decoder_input(quantized, upsampled)

    def speaker_condition(
        self,
        speakers: torch.Tensor,
        reference: torch.Tensor | None = None,
        reference_mask: torch.Tensor | None = None,
        use_reference: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The waveform decoder's global condition: the speaker ids [B] as given without a speaker
        encoder or a reference; else speaker vectors [B, G]: the encoder's of ``reference``
        [B, T_ref] (``reference_mask`` [B, T_ref]) where ``use_reference`` [B] (bool) is set (all
        rows when None), the speaker table's row elsewhere."""
        if self.speaker_encoder is None or reference is None:
            return speakers
        encoded = self.speaker_encoder(reference, reference_mask)
        if use_reference is None:
            return encoded
        return torch.where(use_reference[:, None], encoded, speaker_vectors(self.decoder.speaker_embedding, speakers))

    def forward(
        self,
        audio: torch.Tensor,
        speakers: torch.Tensor,
        mask: torch.Tensor | None = None,
        reference: torch.Tensor | None = None,
        reference_mask: torch.Tensor | None = None,
        use_reference: torch.Tensor | None = None,
    ) -> VQVAEOutput:
        """audio [B, T], speakers [B], optional mask [B, T] (1 = real sample, 0 = padding); audio
        and mask are cut to whole code frames. With a speaker encoder, ``reference``,
        ``reference_mask`` and ``use_reference`` condition the waveform decoder
        (:meth:`speaker_condition`); the objective's head and the adversary always get the ids."""
        length = audio.shape[-1] // self.hop_length * self.hop_length
        audio = audio[:, :length]
        if mask is not None:
            mask = mask[:, :length]
        condition = speakers
        if self.stage != "units":
            condition = self.speaker_condition(speakers, reference, reference_mask, use_reference)
        if self.stage == "decoder":  # frozen codes: no encoder in the backward pass
            with torch.no_grad():
                q = self.quantize(audio)
            waveform = self.decoder.reconstruct(audio, self.jitter(q.decoder_input), condition, mask)
            return VQVAEOutput(waveform.loss, q.vq, q.top, waveform)
        q = self.quantize(audio)
        reconstruction: TeacherForcedOutput | WaveformOutput | MelOutput | CPCOutput
        if self.stage == "units" and self.units_head is not None:
            reconstruction = self.units_head.reconstruct(audio, self.jitter(q.decoder_input), speakers, mask)
        else:
            reconstruction = self.decoder.reconstruct(audio, self.jitter(q.decoder_input), condition, mask)
        loss = reconstruction.loss + q.loss
        adversary = None
        if self.speaker_adversary is not None:
            # on what chooses the codes: the latents in the quantizer's coordinates (whitened or not)
            adversary = self.speaker_adversary(self.quantizer.coordinates(q.latents), speakers)
            loss = loss + adversary.loss
        return VQVAEOutput(loss, q.vq, q.top, reconstruction, adversary)
