"""`vqspeech prior sample`: new speech from a prior over the codes.

Code sequences for a speaker are drawn by ancestral sampling (:func:`draw_candidates`), ranked by
their likelihood under the prior, which keeps the best of more candidates (rejection in the spirit
of VQ-VAE-2), and decoded to audio with the VQ-VAE the codes came from. A bottom prior conditioned
on top codes (hierarchical codes) draws with its top prior first; candidates are then ranked by
the sum of both likelihoods.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio import save_wav
from ..checkpoint import used_checkpoint
from ..data.codes import SAMPLES_MARK, CodesInfo, CodesWriter, Encoding, code_usage, refuse_existing_codes
from ..device import select_device
from ..errors import UserError
from ..fileio import FolderLock, check_results_home, file_digest, model_home, read_json_object, write_text_atomic
from ..models.prior import CodePrior, sample_codes
from ..models.quantizer import perplexity
from ..training.prior_task import load_prior_checkpoint, prior_from_checkpoint
from .vqspeech import VQSpeech, check_seed, check_temperature, is_real, is_whole

LN2 = math.log(2.0)

MAX_SECONDS = 600.0
"""The longest sample drawn (`prior sample --seconds`): 60,000 codes at 100 codes per second."""


def load_prior(path: str | Path, device: str = "auto") -> tuple[CodePrior, dict[str, Any], torch.device]:
    """(model on device in eval mode, checkpoint dict, device) from a prior folder (its
    ``best.pt``, the lowest validation bits per code, else ``last.pt``) or a checkpoint file. The
    checkpoint is checked before the model is built from it (UserError naming it)."""
    ckpt_path = used_checkpoint(path)
    ckpt = load_prior_checkpoint(ckpt_path)
    model = prior_from_checkpoint(ckpt, ckpt_path)
    torch_device = select_device(device)
    return model.to(torch_device).eval(), ckpt, torch_device


def load_top_prior(
    top_prior: str | Path | None, prior_dir: str | Path, ckpt: dict[str, Any], device: str
) -> CodePrior | None:
    """The top prior that a bottom prior with checkpoint ``ckpt`` needs, or None for a prior that
    is not conditioned; any mismatch raises UserError."""
    conditioning = ckpt.get("top")
    if conditioning is None:
        if top_prior is not None:
            raise UserError(
                f"`top_prior` is only for a bottom prior conditioned on top codes, and "
                f"{prior_dir} is not one; leave `top_prior` out."
            )
        return None
    if top_prior is None:
        raise UserError(
            f"{prior_dir} models bottom codes given top codes; pass `top_prior`, the "
            "prior trained with data.level=top on the same codes."
        )
    model, top_ckpt, _ = load_prior(top_prior, device)
    if top_ckpt["level"] != "top":
        raise UserError(
            f"The top prior {top_prior} is not a top-level prior; give the folder trained "
            "with data.level=top on the same codes."
        )
    if int(top_ckpt["num_codes"]) != int(conditioning["num_codes"]):
        raise UserError(
            f"The top prior {top_prior} models {top_ckpt['num_codes']} top codes, but "
            f"{prior_dir} is conditioned on {conditioning['num_codes']}; give the top "
            "prior of the same codes."
        )
    if list(top_ckpt["speakers"]) != list(ckpt["speakers"]):
        raise UserError(
            f"{prior_dir} and the top prior {top_prior} were trained for different speaker "
            "lists; train both on the same codes folder."
        )
    top_made, bottom_made = codes_made(top_prior, top_ckpt), codes_made(prior_dir, ckpt)
    if top_made is not None and bottom_made is not None:  # top codes index the top codebook of one VQ-VAE
        digests = (top_made.codebook, bottom_made.codebook)
        made = digests if None not in digests else (top_made.checkpoint, bottom_made.checkpoint)
        if None not in made and made[0] != made[1]:
            raise UserError(
                f"The top prior {top_prior} was trained on the codes of another VQ-VAE than {prior_dir} "
                f"({top_made.checkpoint}); give the top prior of the same codes."
            )
    stride = top_made.stride if top_made is not None else None
    if stride is not None and int(stride) != int(conditioning["stride"]):
        raise UserError(
            f"The top prior {top_prior} models top codes at stride {stride}, but {prior_dir} "
            f"is conditioned on stride {conditioning['stride']}; give the top prior of the "
            "same codes."
        )
    return model


@dataclass
class Candidates:
    """Drawn code sequences with their scores under the prior(s)."""

    codes: list[np.ndarray] = field(default_factory=list)
    """int [L] (grouped: [L, G]) each."""
    tops: list[np.ndarray] = field(default_factory=list)
    """int [ceil(L / stride)] each, when a top prior drew top codes first; else empty."""
    bits: list[float] = field(default_factory=list)
    """The ranking score: (top + bottom) bits per (bottom) code."""
    top_bits: list[float] = field(default_factory=list)
    """Top prior: bits per top code."""
    bottom_bits: list[float] = field(default_factory=list)
    """Bits per code of the codes (given the top codes)."""

    def best(self, num: int) -> list[int]:
        """The indices of the ``num`` most likely, the most likely first."""
        return np.argsort(self.bits, kind="stable")[:num].tolist()


@torch.no_grad()
def draw_candidates(
    model: CodePrior,
    top_model: CodePrior | None,
    speaker_id: int,
    length: int,
    count: int,
    *,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator,
    batch: int = 8,
    progress: bool = False,
) -> Candidates:
    """``count`` sequences of ``length`` codes for one speaker; with ``top_model`` each one's top
    codes are drawn first (same temperature and top_k) and its codes given them."""
    device = generator.device
    stride = model.top_stride if model.conditioned else 1
    top_length = -(-length // stride)
    out = Candidates()
    for start in range(0, count, batch):
        n = min(batch, count - start)
        speakers = torch.full((n,), speaker_id, dtype=torch.long, device=device)
        top, top_loglik = None, torch.zeros(n, device=device)
        if top_model is not None:
            top, top_loglik = sample_codes(
                top_model,
                speakers,
                top_length,
                temperature=temperature,
                top_k=top_k,
                generator=generator,
                progress=progress,
                desc=f"top codes {start + 1}-{start + n} of {count}",
            )
            out.tops += list(top.cpu().numpy())
            out.top_bits += (-top_loglik.cpu().numpy() / top_length / LN2).tolist()
        codes, loglik = sample_codes(
            model,
            speakers,
            length,
            top=top,
            temperature=temperature,
            top_k=top_k,
            generator=generator,
            progress=progress,
            desc=f"draw {start + 1}-{start + n} of {count}",
        )
        out.codes += list(codes.cpu().numpy())
        out.bottom_bits += (-loglik.cpu().numpy() / length / LN2).tolist()
        out.bits += (-(loglik + top_loglik).cpu().numpy() / length / LN2).tolist()
    return out


MAX_CANDIDATES = 1000
"""Samples drawn at once are held in memory together: a bound on them."""

MARK = SAMPLES_MARK
"""Hidden file that marks a folder as ``prior sample``'s (written before anything else)."""


def _is_samples_record(path: Path) -> bool:
    """Whether ``path`` is a ``samples.json`` that ``prior sample`` wrote (its keys, not its name)."""
    record = read_json_object(path)
    return record is not None and {"speaker", "wavs", "kept_bits_per_code"} <= record.keys()


def codes_made(prior: str | Path, ckpt: dict[str, Any]) -> CodesInfo | None:
    """What a prior knows of the codes it learned (their rate, the VQ-VAE and codebook that made
    them): its folder's copy of their ``codes.json`` (a checkpoint file in ``PRIOR/checkpoints/``
    reads its folder's), or the copy its checkpoint carries (``codes_info``: every checkpoint since
    training recorded it, and every export); None when there is neither."""
    home = Path(prior) if Path(prior).is_dir() else model_home(prior)
    if home is not None and (home / "codes.json").is_file():
        return CodesInfo.load(home / "codes.json").without_ids()
    record = ckpt.get("codes_info")
    return CodesInfo.from_json(record, Path(prior)).without_ids() if isinstance(record, dict) else None


def prior_codes_info(prior_dir: str | Path, ckpt: dict[str, Any]) -> CodesInfo | None:
    """The codes the prior learned (:func:`codes_made`), without the per-utterance ids; None when
    that is not known. UserError when it describes other codes than the checkpoint models."""
    info = codes_made(prior_dir, ckpt)
    if info is None:
        return None
    path = Path(prior_dir) / "codes.json" if Path(prior_dir).is_dir() else Path(prior_dir)
    if (info.num_codes, info.groups) != (ckpt["num_codes"], ckpt["groups"]):
        raise UserError(
            f"{path} describes codes with K={info.num_codes} in {info.groups} group(s), but the prior models "
            f"K={ckpt['num_codes']} in {ckpt['groups']}; train the prior again on its codes."
        )
    return info


def decoder_for(source: str | Path | None, ckpt: dict, info: CodesInfo | None, speaker: str, device: str) -> VQSpeech:
    """The VQ-VAE that decodes this prior's samples, checked before anything is drawn: it exists,
    has a trained decoder, knows ``speaker``, and takes codes of the prior's levels (two for a
    prior conditioned on top codes), K, groups and (``info``: the prior's codes.json, when there is
    one) code rate."""
    if info is not None and info.checkpoint is None and info.extra.get("system"):
        raise UserError(
            f"The prior was trained on codes of {info.extra['system']}, which no VQ-VAE made or can decode; "
            "keep its samples as codes with `codes_only`."
        )
    if not source:
        raise UserError("No VQ-VAE is recorded for these codes; pass `vqvae` (the VQ-VAE's experiment folder).")
    if not Path(source).exists():
        raise UserError(
            f"The VQ-VAE these codes came from ({source}) is not there; pass `vqvae` (the VQ-VAE's experiment folder)."
        )
    vq = VQSpeech.load(source, device)
    try:
        vq.require_decoder()
    except UserError as exc:  # codes of a units stage: its decoder stage (same codes) can speak them
        raise UserError(f"{exc} Or pass `vqvae`: a decoder trained on these units (train.units_from).") from None
    mismatch = decoder_mismatch(vq, ckpt, info)
    if mismatch is not None:
        raise UserError(f"{source} {mismatch}; pass the VQ-VAE the codes came from.")
    if speaker not in vq.speakers:
        shown = ", ".join(vq.speakers[:30]) + (" ..." if len(vq.speakers) > 30 else "")
        raise UserError(
            f"Speaker '{speaker}' is unknown to the VQ-VAE {source}, which knows {shown}; choose one of those, "
            "or pass the VQ-VAE the codes came from."
        )
    vq.speaker_id(speaker)  # before any drawing: a voice its decoder never trained is refused
    return vq


def decoder_mismatch(vq: VQSpeech, ckpt: dict, info: CodesInfo | None) -> str | None:
    """How the VQ-VAE ``vq`` cannot decode the codes of the prior with checkpoint ``ckpt`` (a
    clause following the VQ-VAE's name), or None when it can."""
    quantizer, top, vq_top = vq.model.quantizer, ckpt.get("top"), vq.model.top
    if (vq_top is not None) != (top is not None):
        levels = "two code levels" if vq_top is not None else "one code level"
        return f"decodes {levels}, which these samples do not have"
    if ckpt["num_codes"] != quantizer.num_codes:
        return f"has a codebook of {quantizer.num_codes} codes but the prior draws from {ckpt['num_codes']}"
    if ckpt["groups"] != quantizer.num_groups:
        return f"decodes codes of {quantizer.num_groups} codebook group(s), but the prior draws {ckpt['groups']}"
    if vq_top is not None and top is not None:
        if top["stride"] != vq_top.stride:
            return f"has a top code every {vq_top.stride} codes, but the prior's top codes have stride {top['stride']}"
        if top["num_codes"] != vq_top.num_codes:
            return f"has {vq_top.num_codes} top codes but the prior's top codes number {top['num_codes']}"
    rate = vq.sample_rate / vq.hop_length
    if info is not None and not math.isclose(rate, info.code_rate_hz, rel_tol=1e-6):
        return f"decodes {rate:g} codes per second, but the prior's codes come at {info.code_rate_hz:g} per second"
    if info is not None and info.codebook is not None and info.codebook != vq.codebook_digest:
        return (
            "has another codebook than the one whose codes the prior learned (another model, or it has trained on "
            "since: then encode the data again and train a new prior)"
        )
    return None


def sample_prior(
    prior_dir: str | Path,
    out_dir: str | Path,
    *,
    speaker: str,
    seconds: float,
    num: int = 4,
    candidates: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    vqvae: str | Path | None = None,
    codes_only: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    top_prior: str | Path | None = None,
) -> dict:
    """Draw ``num`` code sequences of ``seconds`` for ``speaker`` and decode them to wavs.

    With ``candidates`` > ``num``, that many are drawn and the ``num`` with the highest likelihood
    per code under the prior are kept. Writes a codes folder (``OUT/codes/sample_<i>.npy``,
    ``sample_00`` the most likely, ``codes.json``, ...), ``OUT/sample_<i>.wav``, ``OUT/scores.tsv``
    (every candidate: bits per code under the prior, kept or not) and ``OUT/samples.json``
    (settings, code usage of the samples against the training data's).

    A bottom prior conditioned on top codes needs ``top_prior`` (trained with ``data.level=top``);
    the top codes go to ``OUT/codes_top/`` and both levels to the decoder. A top-level prior can be
    sampled alone with ``codes_only``.
    """
    out_dir = Path(out_dir)
    if (out_dir / "samples.json").exists() and not overwrite:
        raise UserError(f"{out_dir} already holds samples; pass `overwrite=True` to replace them.")
    ours = (out_dir / MARK).exists() or _is_samples_record(out_dir / "samples.json")
    if not ours and out_dir.is_dir() and any(not p.name.startswith(".") for p in out_dir.iterdir()):
        raise UserError(
            f"{out_dir} holds files that `prior sample` did not write (an encode folder?); "
            "choose a new or empty output folder."
        )
    refuse_existing_codes(out_dir, overwrite=True, samples=True)  # before anything is deleted
    candidates = num if candidates is None else candidates
    for name, value in (("num", num), ("candidates", candidates), ("top_k", top_k)):
        if value is not None and not (is_whole(value) and value >= 1):
            raise UserError(f"`{name}` must be a whole number of at least 1, not {value!r}.")
    num, candidates = int(num), int(candidates)  # numpy integers too: samples.json is JSON
    top_k = None if top_k is None else int(top_k)
    if candidates < num:
        raise UserError(f"`candidates` ({candidates}) must be at least `num` ({num}).")
    if candidates > MAX_CANDIDATES:
        raise UserError(f"`candidates` (and `num`) must be at most {MAX_CANDIDATES}, not {candidates}.")
    if not (is_real(seconds) and 0 < seconds <= MAX_SECONDS):
        raise UserError(f"`seconds` must be a number above 0 and at most {MAX_SECONDS:g}, not {seconds!r}.")
    seconds = float(seconds)
    check_temperature(temperature)
    temperature = float(temperature)
    check_seed(seed)
    seed = int(seed)
    if codes_only and vqvae is not None:
        raise UserError(
            "`vqvae` names the model that decodes the samples, and `codes_only` decodes none; leave one out."
        )

    model, ckpt, torch_device = load_prior(prior_dir, device)
    prior_path = used_checkpoint(prior_dir)  # the checkpoint load_prior read
    top_model = load_top_prior(top_prior, prior_dir, ckpt, device)
    if not codes_only and ckpt["level"] == "top":
        raise UserError(
            f"{prior_dir} models top codes only, which cannot be decoded without bottom "
            f"codes; pass `codes_only=True`, or sample a bottom prior with `top_prior` {prior_dir}."
        )
    speakers = ckpt["speakers"]
    if speaker not in speakers:
        raise UserError(
            f"Speaker '{speaker}' is unknown to this prior; choose one of: "
            f"{', '.join(speakers[:30])}{' ...' if len(speakers) > 30 else ''}."
        )
    known = prior_codes_info(prior_dir, ckpt)
    source = vqvae or (known.checkpoint if known else None)
    vq = None if codes_only else decoder_for(source, ckpt, known, speaker, device)
    if vq is not None and known is None:
        warnings.warn(
            f"{prior_dir} records nothing of the codes it learned (a checkpoint copied out of its folder by an "
            f"older version), so nothing checks that {source} made them; another model's codebook decodes them "
            "as noise.",
            stacklevel=2,
        )
    info = known or CodesInfo.for_rate(  # no codes.json: the decoder's rate, else 100 codes per second
        vq.sample_rate / vq.hop_length if vq else 100.0, ckpt["num_codes"], groups=ckpt["groups"]
    )
    if seconds * info.code_rate_hz < 1:
        raise UserError(
            f"`seconds` {seconds:g} is shorter than one code ({1 / info.code_rate_hz:g} s at "
            f"{info.code_rate_hz:g} codes per second); ask for at least that."
        )
    length = max(1, int(round(seconds * info.code_rate_hz)))
    check_results_home(out_dir, [used_checkpoint(prior_dir), vq.checkpoint if vq else source])

    with FolderLock(out_dir, "prior sample"):
        write_text_atomic(out_dir / MARK, "")  # the folder is ours: a failed run does not block the next
        for stale in [*out_dir.glob("sample_*.wav"), out_dir / "scores.tsv", out_dir / "samples.json"]:
            stale.unlink(missing_ok=True)
        generator = torch.Generator(device=torch_device).manual_seed(seed)
        drawn = draw_candidates(
            model,
            top_model,
            speakers.index(speaker),
            length,
            candidates,
            temperature=temperature,
            top_k=top_k,
            generator=generator,
            progress=True,
        )
        kept = drawn.best(num)
        names = {i: f"sample_{rank:02d}" for rank, i in enumerate(kept)}  # sample_00 is the best
        samples = {
            names[i]: Encoding(drawn.codes[i], drawn.tops[i] if drawn.tops else None, speaker=speaker) for i in kept
        }

        writer = CodesWriter(
            out_dir, top=bool(drawn.tops), overwrite=True, samples=True
        )  # samples.json was checked above
        for name, encoding in samples.items():
            writer.add(name, encoding)
        info.speakers = {name: speaker for name in samples}
        writer.finish(info)
        write_text_atomic(out_dir / "scores.tsv", scores_table(drawn, names))

        written = []
        if vq is not None:
            wavs = vq.decode_batch(list(samples.values()), [speaker] * len(samples), seed=seed, progress=True)
            for name, wav in zip(samples, wavs, strict=True):
                save_wav(out_dir / f"{name}.wav", wav, vq.sample_rate)
                written.append(str(out_dir / f"{name}.wav"))

        sample_usage = code_usage([drawn.codes[i] for i in kept], int(ckpt["num_codes"]))
        data_usage = np.asarray(ckpt.get("data_usage", []), dtype=np.int64)
        record = {
            "speaker": speaker,
            "seconds": seconds,
            "codes_per_sample": length,
            "num": num,
            "candidates": candidates,
            "temperature": temperature,
            "top_k": top_k,
            "seed": seed,
            "step": vq.step if vq is not None else None,  # the decoder's training step
            "model_digest": vq.checkpoint_digest if vq is not None else None,
            "prior_step": ckpt.get("step"),
            "prior": str(prior_path.resolve()),
            "prior_digest": file_digest(prior_path),  # the report tells samples of another prior
            "kept_bits_per_code": [round(drawn.bits[i], 4) for i in kept],
            "all_bits_per_code_mean": float(np.mean(drawn.bits)),
            "samples_codes_used": int((sample_usage > 0).sum()),
            "samples_perplexity": float(perplexity(torch.from_numpy(sample_usage))),
            "data_codes_used": int((data_usage > 0).sum()) if data_usage.size else None,
            "data_perplexity": float(perplexity(torch.from_numpy(data_usage))) if data_usage.size else None,
            "wavs": written,
        }
        if ckpt["level"] == "top":
            record["level"] = "top"
        if top_model is not None:
            record.update(
                top_prior=str(top_prior),
                stride=model.top_stride,
                top_codes_per_sample=len(drawn.tops[0]),
                kept_top_bits_per_top_code=[round(drawn.top_bits[i], 4) for i in kept],
            )
        write_text_atomic(out_dir / "samples.json", json.dumps(record, indent=2) + "\n")
    return record


def scores_table(drawn: Candidates, names: dict[int, str]) -> str:
    """``scores.tsv``: candidate, bits per code (the ranking score), kept name or '-'; with a top
    prior also each level's own bits (top: per top code, bottom: per bottom code given the top)."""
    header = "candidate\tbits_per_code\tkept"
    rows = [f"{i}\t{bits:.4f}\t{names.get(i, '-')}" for i, bits in enumerate(drawn.bits)]
    if drawn.top_bits:
        header += "\ttop_bits_per_top_code\tbottom_bits_per_code"
        rows = [f"{row}\t{drawn.top_bits[i]:.4f}\t{drawn.bottom_bits[i]:.4f}" for i, row in enumerate(rows)]
    return "\n".join([header, *rows]) + "\n"
