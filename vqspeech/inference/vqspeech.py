"""Load a trained VQ-VAE and use it: encode audio to codes, decode codes, convert voices.

from vqspeech import VQSpeech
vq = VQSpeech.load("exp/demo")                  # experiment folder or checkpoint file
encoding = vq.encode(audio, sample_rate)        # Encoding: codes np.int16 [F] (+ top, latents)
wav = vq.decode(encoding, speaker="us_f3")      # np.float32 [F * hop] at vq.sample_rate
wav = vq.convert(audio, sample_rate, speaker="gb_m1")
wav = vq.convert(audio, sample_rate, speaker="anna.wav")  # any voice: a model with a speaker encoder
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..audio import check_audio, normalize_level, resample
from ..checkpoint import codebook_digest, load_checkpoint, resolve_checkpoint, weights_problem
from ..config import training_stage
from ..data.codes import Encoding
from ..data.reference import check_reference, load_reference
from ..device import select_device
from ..errors import UserError, first_line
from ..fileio import file_digest, is_int
from ..models.conv_decoder import ConvDecoder
from ..models.speaker_encoder import speaker_vectors
from ..models.vqvae import VQVAE
from ..models.wavenet import WaveNetDecoder
from ..training.schema import MODEL_RULES, check_rules
from .fast_generate import FastWaveNet
from .generate import generate

Speaker = str | Path | np.ndarray
"""Who speaks: a known speaker's name, or reference audio of a voice (a sound file or a folder of
them, or samples at the model's rate) for a model with a speaker encoder."""

MIN_REFERENCE_SECONDS = 1.0
"""The shortest reference (all its files together) a voice is taken from."""


def is_whole(value: object) -> bool:
    """An integer argument of the API: Python's or numpy's, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A number argument of the API: an int or float, Python's or numpy's, not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_temperature(temperature: float) -> None:
    """UserError unless ``temperature`` is 0 (the most likely sample) or in [0.01, 100] (a smaller
    one overflows the scaled logits)."""
    number = is_real(temperature)
    if not (number and (temperature == 0 or 0.01 <= temperature <= 100)):
        shown = temperature if number else f"a {type(temperature).__name__}"
        raise UserError(f"`temperature` must be 0 (the most likely sample) or a number from 0.01 to 100, not {shown}.")


def check_seed(seed: int) -> None:
    """UserError unless ``seed`` is a whole number from 0 to 2**63 - 1 (what torch's generators take)."""
    if not (is_whole(seed) and 0 <= seed < 2**63):
        raise UserError(f"`seed` must be a whole number from 0 to 2**63 - 1, not {seed!r}.")


class VQSpeech:
    """A trained VQ-VAE ready for inference on one device."""

    def __init__(
        self,
        model: VQVAE,
        speakers: list[str],
        config: dict,
        device: torch.device,
        checkpoint: Path | None = None,
        step: int | None = None,
        untrained_speakers: list[str] | None = None,
    ):
        self.model = model.to(device).eval()
        self.speakers, self.config, self.device, self.checkpoint = speakers, config, device, checkpoint
        # speakers its units know but its waveform decoder never heard (a decoder stage on fewer speakers)
        self.untrained_speakers = set(untrained_speakers or ())
        self.step = step  # the training step of the checkpoint: results record which state they measured
        self._fast: FastWaveNet | Literal[False] | None = None  # the C generator, built at the first CPU decode

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> VQSpeech:
        ckpt_path = resolve_checkpoint(path)
        return cls.from_checkpoint(load_checkpoint(ckpt_path), ckpt_path, device)

    @classmethod
    def from_checkpoint(cls, ckpt: dict, ckpt_path: Path, device: str = "auto") -> VQSpeech:
        """The model of a checkpoint already read by :func:`load_checkpoint` from ``ckpt_path`` (a
        caller that also needs its other fields reads the file once)."""
        if ckpt.get("kind") != "vqvae":
            raise UserError(f"{ckpt_path} holds a {ckpt.get('kind')} model, not a VQ-VAE.")
        try:
            check_rules({"model": ckpt["config"]["model"]}, MODEL_RULES)  # a crafted config: hop_length 0, ...
            with torch.device("meta"):  # a config asking for more than its weights hold allocates nothing
                problem = weights_problem(
                    VQVAE.from_config(ckpt["config"]["model"], len(ckpt["speakers"])), ckpt["model"]
                )
            if problem is not None:
                raise ValueError(problem)
            model = VQVAE.from_config(ckpt["config"]["model"], len(ckpt["speakers"]))
            model.load_state_dict(ckpt["model"])
            model.set_stage(training_stage(ckpt["config"]))
        except Exception as exc:  # a crafted or damaged checkpoint can fail anywhere in building
            raise UserError(f"{ckpt_path} does not hold a usable VQ-VAE ({first_line(exc)[:300]}).") from None
        step = ckpt.get("step") if is_int(ckpt.get("step")) else None
        enrolment = ckpt.get("enrolment")
        if isinstance(enrolment, dict) and enrolment.get("finished") is False:
            warnings.warn(
                f"{ckpt_path} holds an enrolment of {enrolment.get('name')!r} stopped at step "
                f"{enrolment.get('steps')}, before its end; run the same `vqspeech enroll` again to finish it.",
                stacklevel=2,
            )
        untrained = ckpt.get("untrained_speakers")
        untrained = [str(s) for s in untrained] if isinstance(untrained, list) else None
        return cls(model, list(ckpt["speakers"]), ckpt["config"], select_device(device), ckpt_path, step, untrained)

    @property
    def units_only(self) -> bool:
        """True for the first stage of a two-stage model: its codes are trained, its waveform
        decoder is not."""
        return self.model.stage == "units"

    def require_decoder(self) -> None:
        """UserError, saying how to train one, when the model has no trained waveform decoder."""
        if self.units_only:
            exp: Path | str = "EXP"
            if self.checkpoint is not None:
                in_folder = self.checkpoint.parent.name == "checkpoints"
                exp = self.checkpoint.parent.parent if in_folder else self.checkpoint
            raise UserError(
                f"{exp} has learned units only (model.objective={self.config['model']['objective']}); "
                f"train its waveform decoder on them first: `vqspeech train NEW_EXP train.units_from={exp} ...` "
                "with the same model.* values."
            )

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    @functools.cached_property
    def codebook_digest(self) -> str:
        """A short hash of the codebook(s) whose indices the codes are: codes.json records it, so
        codes are decoded only by a model that shares that codebook (the one that made them, a
        decoder trained on its units, an enrolment of it). Computed once: a loaded model's codebook
        does not change (as the C generator built at the first decode assumes), and every encode
        records it."""
        return codebook_digest(self.model.state_dict())

    @functools.cached_property
    def checkpoint_digest(self) -> str | None:
        """The digest (:func:`vqspeech.fileio.file_digest`) of the checkpoint file the model was
        loaded from, when there is one: results record it, and the report tells results of another
        state of the model (trained again to the same step, copied from another experiment)."""
        ckpt = self.checkpoint
        return file_digest(ckpt) if ckpt is not None and Path(ckpt).is_file() else None

    @property
    def hop_length(self) -> int:
        return self.model.hop_length

    @property
    def speaker_ids(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.speakers)}

    @property
    def voiced_speakers(self) -> list[str]:
        """The speakers whose voices the waveform decoder learned: all it knows but the untrained ones."""
        return [s for s in self.speakers if s not in self.untrained_speakers]

    def speaker_id(self, name: str) -> int:
        if name not in self.speakers:
            shown = ", ".join(self.speakers[:30]) + (" ..." if len(self.speakers) > 30 else "")
            other = (
                " (or give a sound file or folder of the target voice)"
                if self.model.speaker_encoder is not None
                else ""
            )
            raise UserError(f"Unknown speaker {name!r}; this model knows: {shown}{other}.")
        if name in self.untrained_speakers:
            trained = self.voiced_speakers
            raise UserError(
                f"The waveform decoder of {self._exp_name()} never trained on {name!r}'s voice (its units did, "
                f"train.units_from); choose one of {', '.join(trained[:10])}, or enrol the voice under a new name."
            )
        return self.speakers.index(name)

    def _exp_name(self) -> str:
        if self.checkpoint is None:
            return "this model"
        in_folder = self.checkpoint.parent.name == "checkpoints"
        return str(self.checkpoint.parent.parent if in_folder else self.checkpoint)

    @torch.no_grad()
    def speaker_vector(self, speaker: Speaker) -> torch.Tensor:
        """The waveform decoder's speaker vector [G] for ``speaker``: a known speaker's name (its
        row of the speaker table), or the voice of reference audio (a sound file or a folder of
        them, or an array of samples at the model's rate), through the speaker encoder."""
        if isinstance(speaker, (str, Path)) and str(speaker) == "":  # Path("") would be the working directory
            raise UserError("The target speaker is empty; give a speaker name, or a sound file or folder of the voice.")
        if isinstance(speaker, str) and (speaker in self.speakers or not Path(speaker).exists()):
            ids = torch.tensor([self.speaker_id(speaker)], device=self.device)
            return speaker_vectors(self.model.decoder.speaker_embedding, ids)[0]
        encoder = self.model.speaker_encoder
        if encoder is None:
            raise UserError(
                f"{self._exp_name()} has no speaker encoder, so it speaks only the voices it knows "
                f"({', '.join(self.speakers[:10])}); add a new voice with `vqspeech enroll EXP NAME AUDIO...`, "
                "or train a model with model.speaker_encoder.share=0.5."
            )
        if isinstance(speaker, np.ndarray):
            references = check_reference(
                [check_audio(speaker, self.sample_rate)], self.sample_rate, MIN_REFERENCE_SECONDS
            )
        else:
            references = load_reference([speaker], self.sample_rate, min_seconds=MIN_REFERENCE_SECONDS)
        if any(len(r) < encoder.hop_length for r in references):
            raise UserError(f"A reference of the target voice is shorter than {encoder.hop_length} samples.")
        vectors = [encoder(torch.from_numpy(r).to(self.device)[None])[0] for r in references]
        return torch.stack(vectors).mean(0)

    def _prepare(self, audio: np.ndarray, sample_rate: int) -> torch.Tensor:
        """audio [T] at ``sample_rate`` -> [1, F * hop] at the model's rate and at the level
        ``prepare`` gives a corpus (the model never saw another), whole code frames."""
        audio = check_audio(audio, sample_rate)
        if int(sample_rate) < self.sample_rate:  # enrolment and references refuse it; codes and conversions warn
            warnings.warn(
                f"Audio at {int(sample_rate)} Hz is below the model's {self.sample_rate} Hz: it is upsampled, and its "
                f"band above {int(sample_rate) // 2} Hz, which the model always heard in training, is empty.",
                stacklevel=3,
            )
        audio = normalize_level(resample(audio, int(sample_rate), self.sample_rate))
        frames = len(audio) // self.hop_length
        if frames == 0:
            raise UserError(
                f"Audio of {len(audio)} samples is shorter than one code frame "
                f"({self.hop_length} samples at {self.sample_rate} Hz)."
            )
        return torch.from_numpy(audio[: frames * self.hop_length]).to(self.device)[None]

    @property
    def top_stride(self) -> int:
        """Bottom codes per top code of a hierarchical model (0: one level)."""
        return self.model.top_stride

    @torch.no_grad()
    def encode(self, audio: np.ndarray, sample_rate: int, latents: bool = False, chunk_frames: int = 2048) -> Encoding:
        """audio [T] -> :class:`Encoding`: codes np.int16 [F] (grouped codebooks: [F, G]), the top
        codes np.int16 [ceil(F / stride)] of a hierarchical model (else None), and with ``latents``
        the bottom quantizer's input np.float32 [F, D] (else None).

        Long audio is encoded ``chunk_frames`` frames at a time, each chunk with the model's
        context on both sides (and a normalising encoder given the whole utterance's statistics),
        so the result equals one pass and memory stays bounded.
        """
        if not is_whole(chunk_frames) or chunk_frames < 1:
            raise UserError(f"`chunk_frames` must be a positive whole number, not {chunk_frames!r}.")
        x = self._prepare(audio, sample_rate)
        hop, frames = self.hop_length, x.shape[-1] // self.hop_length
        margin = self.model.context_frames
        if self.top_stride:  # chunks and margins start on top-code boundaries
            chunk_frames = max(1, chunk_frames // self.top_stride) * self.top_stride
        stats = self.model.encoder.feature_stats(x) if self.model.encoder.normalize else None
        codes, tops, zs = [], [], []
        for first in range(0, frames, chunk_frames):
            last = min(frames, first + chunk_frames)
            lo, hi = max(0, first - margin), min(frames, last + margin)
            q = self.model.quantize(x[:, lo * hop : hi * hop], stats)
            codes.append(q.vq.codes[0, first - lo : last - lo].cpu().numpy().astype(np.int16))
            if q.top is not None:
                s = self.top_stride
                tops.append(q.top.codes[0, (first - lo) // s : -(-(last - lo) // s)].cpu().numpy().astype(np.int16))
            if latents:
                zs.append(q.latents[0, :, first - lo : last - lo].t().cpu().numpy().astype(np.float32))
        return Encoding(
            np.concatenate(codes),
            np.concatenate(tops) if tops else None,
            np.concatenate(zs) if latents else None,
            codebook=self.codebook_digest,
        )

    def _check_codes(self, encodings: list[Encoding]) -> None:
        """UserError unless the codes fit this model: its codebook (when the codes record theirs),
        ranges, levels, top lengths."""
        recorded = {e.codebook for e in encodings} - {None}
        if recorded and recorded != {self.codebook_digest}:
            raise UserError(
                "These codes index another model's codebook (not this model's); decode them with the model "
                "that made them, or one trained on its units."
            )
        has_top = [e.top is not None for e in encodings]
        if self.top_stride and not all(has_top):
            raise UserError(
                "This model decodes two code levels (VQ-VAE-2); give the folder `vqspeech encode` "
                "wrote (codes/ and codes_top/), not bottom codes alone."
            )
        if not self.top_stride and any(has_top):
            raise UserError(
                "These codes have two levels but this model has one; decode them with the "
                "hierarchical model that made them."
            )
        levels = [(e.codes, self.model.quantizer.num_codes) for e in encodings]
        if self.model.top is not None:
            levels += [(e.top, self.model.top.num_codes) for e in encodings if e.top is not None]  # all have one
            for e in encodings:
                expected = self.model.top.top_frames(len(e.codes))
                if e.top is not None and len(e.top) != expected:
                    raise UserError(
                        f"{len(e.top)} top codes do not match {len(e.codes)} bottom codes "
                        f"(this model needs ceil({len(e.codes)} / {self.top_stride}) = "
                        f"{expected}); were they made by another model?"
                    )
        groups = self.model.quantizer.num_groups
        for e in encodings:
            shape = np.shape(e.codes)
            if (groups == 1 and len(shape) != 1) or (groups > 1 and (len(shape) != 2 or shape[1] != groups)):
                wanted = "[F]" if groups == 1 else f"[F, {groups}]"
                raise UserError(f"Codes of shape {shape} do not fit this model, which decodes codes of shape {wanted}.")
        for array, num_codes in levels:
            array = np.asarray(array)
            if not np.issubdtype(array.dtype, np.integer):
                raise UserError(f"Codes must be whole numbers (an integer array), not {array.dtype}.")
            if array.size and (array.max() >= num_codes or array.min() < 0):
                raise UserError(f"Codes must lie in [0, {num_codes}); were they made by another model?")

    @torch.no_grad()
    def decode_batch(
        self,
        codes: list[Encoding | np.ndarray],
        speakers: list[Speaker],
        temperature: float = 1.0,
        seed: int = 0,
        progress: bool = False,
    ) -> list[np.ndarray]:
        """Generate several utterances together; returns waveforms [F_i * hop] at sample_rate.

        ``speakers``: one per utterance, a known speaker's name or reference audio of any voice
        (:meth:`speaker_vector`; a model with a speaker encoder).

        ``codes``: an :class:`Encoding` per utterance (a bare array [F_i] or [F_i, G] stands for
        the codes of a one-level model). A conv decoder (``model.decoder_type=conv``) is
        deterministic: ``temperature`` and ``seed`` are ignored, and utterances of equal length are
        decoded in one batch each, so a result does not depend on the other utterances of the call.
        """
        self.require_decoder()
        encodings = [c if isinstance(c, Encoding) else Encoding(np.asarray(c)) for c in codes]
        if not encodings:
            return []
        self._check_codes(encodings)
        check_temperature(temperature)
        if isinstance(speakers, (str, np.ndarray)):
            raise UserError(
                "`speakers` is a list with one speaker per code sequence; for one voice for all of them pass "
                f"[speaker] * {len(encodings)}."
            )
        if len(speakers) != len(encodings):
            raise UserError(f"{len(encodings)} code sequences need as many speakers, not {len(speakers)}.")
        check_seed(seed)
        lengths = [len(e) for e in encodings]
        # [N, D, F_max], zeros past each end as in training's padded crops; one utterance at a
        # time, so a top level's context never sees another utterance's padding
        embedded = [
            self.model.embed_codes(self._batch_of_one(e.codes), None if e.top is None else self._batch_of_one(e.top))[0]
            for e in encodings
        ]
        latents = embedded[0].new_zeros(len(encodings), embedded[0].shape[0], max(lengths))
        for i, z in enumerate(embedded):
            latents[i, :, : lengths[i]] = z
        by_name: dict[str, torch.Tensor] = {}  # a name or path given for many utterances: encoded once
        vectors = []
        for speaker in speakers:
            if isinstance(speaker, np.ndarray):
                vectors.append(self.speaker_vector(speaker))
            else:
                key = str(speaker)
                if key not in by_name:
                    by_name[key] = self.speaker_vector(key)
                vectors.append(by_name[key])
        ids = torch.stack(vectors)  # [N, G]: the decoders take speaker vectors as well as ids
        decoder = self.model.decoder
        if isinstance(decoder, ConvDecoder):  # model.decoder_type conv
            return self._decode_conv(latents, ids, lengths)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        fast = self._fast_generator(decoder)
        if fast is not None:
            audio = fast.generate(latents, ids, temperature=temperature, generator=generator, progress=progress).numpy()
        else:
            audio = (
                generate(decoder, latents, ids, temperature=temperature, generator=generator, progress=progress)
                .cpu()
                .numpy()
            )
        return [a[: n * self.hop_length] for a, n in zip(audio, lengths, strict=True)]

    def _batch_of_one(self, codes: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(codes, dtype=np.int64), device=self.device)[None]

    def _decode_conv(self, latents: torch.Tensor, ids: torch.Tensor, lengths: list[int]) -> list[np.ndarray]:
        """The conv decoder on latents [N, D, F]: one batch per distinct length, no padding."""
        out: dict[int, np.ndarray] = {}  # row -> waveform
        for n in sorted(set(lengths)):
            rows = [i for i, length in enumerate(lengths) if length == n]
            index = torch.tensor(rows, device=self.device)
            audio = self.model.decoder(latents[index, :, :n], ids[index]).float().cpu().numpy()
            for row, wav in zip(rows, audio, strict=True):
                out[row] = wav
        return [out[row] for row in range(len(lengths))]

    @property
    def waveform_generator(self) -> str:
        """What :meth:`decode` runs on this device: ``"conv"`` (one pass of the conv decoder), ``"C kernel"``
        (the fast incremental WaveNet generator) or ``"reference"`` (PyTorch's incremental generator: on a
        GPU, or where the C kernel does not build)."""
        decoder = self.model.decoder
        if isinstance(decoder, ConvDecoder):
            return "conv"
        return "C kernel" if self._fast_generator(decoder) is not None else "reference"

    def _fast_generator(self, decoder: WaveNetDecoder) -> FastWaveNet | None:
        """The C generator for ``decoder`` (this model's) on CPU (None on GPU, or where no C
        compiler works: then the reference)."""
        if self.device.type != "cpu":
            return None
        if self._fast is None:
            try:
                self._fast = FastWaveNet(decoder)
            except UserError as exc:
                warnings.warn(f"{exc} Using the slower reference generator.", stacklevel=1)
                self._fast = False
        return self._fast or None

    def decode(
        self,
        codes: Encoding | np.ndarray,
        speaker: Speaker | None = None,
        temperature: float = 1.0,
        seed: int = 0,
        progress: bool = False,
    ) -> np.ndarray:
        """One utterance's codes (see :meth:`decode_batch`) -> waveform [F * hop] at sample_rate.
        ``speaker`` None: the speaker an :class:`Encoding` records."""
        if speaker is None:
            speaker = codes.speaker if isinstance(codes, Encoding) else None
            if speaker is None:
                raise UserError(
                    f"No speaker is known for these codes; pass `speaker` (one of: {', '.join(self.speakers[:10])})."
                )
        return self.decode_batch([codes], [speaker], temperature, seed, progress)[0]

    def convert(
        self,
        audio: np.ndarray,
        sample_rate: int,
        speaker: Speaker,
        temperature: float = 1.0,
        seed: int = 0,
        progress: bool = False,
    ) -> np.ndarray:
        """Re-synthesise ``audio`` in ``speaker``'s voice (same codes, another speaker vector):
        a known speaker's name, or reference audio of the target voice (:meth:`speaker_vector`)."""
        return self.decode(self.encode(audio, sample_rate), speaker, temperature, seed, progress)
