"""`vqspeech prior train|sample`: an autoregressive prior over the codes `encode` wrote.

Training reads ``codes/<id>.npy`` and ``codes.json`` (speakers, train/valid splits) and fits one of
the :mod:`vqspeech.models.prior` architectures with the shared :class:`~vqspeech.train.Trainer`
(resume, DDP, TensorBoard, progress bar). Validation reports bits per code next to the unigram
entropy of the codes: a prior that does not beat the unigram has learned nothing about sequence.

Sampling draws code sequences for a speaker by ancestral sampling, optionally keeps the best of
more candidates by the prior's own likelihood (rejection in the spirit of VQ-VAE-2), and decodes
them to audio with the VQ-VAE the codes came from.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.nn import functional as F

from .checkpoint import load_checkpoint
from .config import experiment_config
from .data.manifest import read_manifest
from .device import init_distributed, select_device
from .errors import UserError, first_line
from .fileio import atomic_path, write_text_atomic
from .models.prior import build_prior, sample_codes
from .models.quantizer import perplexity

LN2 = math.log(2.0)


@dataclass
class CodeUtterance:
    id: str
    codes: np.ndarray
    """int64 [T]"""
    speaker: str
    split: str


def read_codes(codes_dir: str | Path, manifest: str | Path | None = None
               ) -> tuple[dict[str, Any], list[CodeUtterance]]:
    """The ``codes.json`` metadata and every utterance of an encode folder with speaker and split.

    Speakers and splits come from ``codes.json`` (written when a manifest was encoded) or, when
    given, from ``manifest``. Raises UserError when the folder or that information is missing.
    """
    from .eval.frames import read_units

    codes_dir = Path(codes_dir)
    units = read_units(codes_dir, latents=False)
    if not units.codes:
        raise UserError(f"{codes_dir} holds no codes/*.npy (only continuous features); a prior needs codes.")
    if units.meta.get("groups", 1) > 1:
        raise UserError(f"The codes in {codes_dir} come from {units.meta['groups']} grouped codebooks; "
                        "the priors model single-codebook codes only (grouped priors are not built yet).")
    meta = units.meta
    speakers, splits = meta.get("speakers") or {}, meta.get("splits") or {}
    if manifest is not None:
        utts = read_manifest(manifest)
        speakers = {u.id: u.speaker for u in utts}
        splits = {u.id: u.split for u in utts}
    if not speakers or not splits:
        raise UserError(f"The codes in {codes_dir} carry no speakers or splits (they were not "
                        "encoded from a manifest); re-run encode on the manifest or pass "
                        "data.manifest=MANIFEST.")
    utts = [CodeUtterance(uid, codes, speakers[uid], splits[uid]) for uid, codes in units.codes.items()
            if uid in speakers and uid in splits]
    if not utts:
        raise UserError(f"No code files of {codes_dir}/codes match the speakers and splits known "
                        "for them; check that the codes and the manifest belong together.")
    return meta, utts


def unigram_bits(train: list[np.ndarray], test: list[np.ndarray], num_codes: int) -> float:
    """Cross-entropy (bits per code) of ``test`` under the add-one unigram of ``train``."""
    counts = np.bincount(np.concatenate(train), minlength=num_codes).astype(np.float64) + 1.0
    log_p = np.log2(counts / counts.sum())
    everything = np.concatenate(test)
    return float(-log_p[everything].mean())


class PriorTask:
    """What the trainer needs to know about a code prior: batches, loss, validation, media."""

    kind = "prior"
    progress_keys = ("bits",)
    best_metric = "bits_per_code"  # small corpora overfit: checkpoints/best.pt is what sampling uses

    def __init__(self, model, config: dict[str, Any], speakers: list[str], num_codes: int,
                 train_utts: list[CodeUtterance], valid_utts: list[CodeUtterance]):
        self.model, self.config, self.speakers, self.num_codes = model, config, speakers, num_codes
        self.speaker_ids = {s: i for i, s in enumerate(speakers)}
        self.train_utts = train_utts
        self.valid_utts = [u for u in valid_utts if u.speaker in self.speaker_ids]
        self.crop = int(config["data"]["crop_frames"])
        lengths = np.array([len(u.codes) for u in train_utts], dtype=np.float64)
        self.weights = lengths / lengths.sum()
        self.data_usage = np.bincount(np.concatenate([u.codes for u in train_utts]),
                                      minlength=num_codes)
        reference = self.valid_utts or train_utts
        self.unigram = unigram_bits([u.codes for u in train_utts], [u.codes for u in reference],
                                    num_codes)

    def batches(self, start_step: int, rank: int, device: torch.device) -> Iterator[Any]:
        """Random crops of ``crop_frames`` codes; utterances drawn in proportion to length. A pure
        function of (seed, step, rank), so a resumed run continues the same data order."""
        batch_size, seed = self.config["train"]["batch_size"], self.config["seed"]
        step = start_step
        while True:
            rng = np.random.default_rng([seed, step, rank])
            picks = rng.choice(len(self.train_utts), size=batch_size, p=self.weights)
            codes = np.zeros((batch_size, self.crop), dtype=np.int64)
            mask = np.zeros((batch_size, self.crop), dtype=bool)
            speakers = np.zeros(batch_size, dtype=np.int64)
            for row, index in enumerate(picks):
                utt = self.train_utts[index]
                offset = int(rng.integers(0, max(1, len(utt.codes) - self.crop + 1)))
                piece = utt.codes[offset: offset + self.crop]
                codes[row, : len(piece)], mask[row, : len(piece)] = piece, True
                speakers[row] = self.speaker_ids[utt.speaker]
            step += 1
            yield (torch.from_numpy(codes).to(device), torch.from_numpy(speakers).to(device),
                   torch.from_numpy(mask).to(device))

    def loss(self, model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor | int]]:
        codes, speakers, mask = batch
        logits = model(codes, speakers)
        nll = F.cross_entropy(logits.transpose(1, 2).float(), codes, reduction="none")
        loss = (nll * mask).sum() / mask.sum()
        return loss, {"bits": loss.detach() / LN2, "samples": mask.sum()}

    @torch.no_grad()
    def validate(self, model, device) -> dict[str, float]:
        """Teacher-forced bits per code on the validation utterances (each cut into pieces of
        ``crop_frames``, every piece starting from the start token), and the unigram's."""
        limit = self.config["train"]["valid_max_utterances"]
        utts = (self.valid_utts or self.train_utts)[:limit]
        bits, count = prior_bits(model, [(u.codes, self.speaker_ids[u.speaker]) for u in utts],
                                 self.crop, self.config["train"]["batch_size"], device)
        return {"bits_per_code": bits, "unigram_bits_per_code": self.unigram, "codes": count}

    @torch.no_grad()
    def log_media(self, model, writer, step: int, device: torch.device) -> None:
        """Usage of codes drawn from the prior (one crop per speaker, up to 8) against the data's."""
        model.eval()
        speakers = torch.arange(min(8, len(self.speakers)), device=device)
        gen = torch.Generator(device=device).manual_seed(step)
        drawn, _ = sample_codes(model, speakers, self.crop, generator=gen)
        usage = np.bincount(drawn.cpu().numpy().reshape(-1), minlength=self.num_codes)
        writer.add_histogram("sample/codes", drawn.cpu().reshape(-1), step)
        writer.add_scalar("sample/codes_used", int((usage > 0).sum()), step)
        writer.add_scalar("sample/perplexity", float(perplexity(torch.from_numpy(usage))), step)
        model.train()

    def checkpoint_fields(self) -> dict[str, Any]:
        return {"speakers": list(self.speakers), "num_codes": self.num_codes,
                "data_usage": self.data_usage.tolist()}


@torch.no_grad()
def prior_bits(model, sequences: list[tuple[np.ndarray, int]], crop: int, batch_size: int,
               device: torch.device) -> tuple[float, int]:
    """(bits per code, number of codes) of ``(codes [T], speaker id)`` sequences under ``model``."""
    was_training = model.training
    model.eval()
    pieces = [(codes[i: i + crop], spk) for codes, spk in sequences for i in range(0, len(codes), crop)]
    total, count = 0.0, 0
    for start in range(0, len(pieces), batch_size):
        chunk = pieces[start: start + batch_size]
        length = max(len(c) for c, _ in chunk)
        codes = torch.zeros(len(chunk), length, dtype=torch.long)
        mask = torch.zeros(len(chunk), length, dtype=torch.bool)
        for row, (c, _) in enumerate(chunk):
            codes[row, : len(c)], mask[row, : len(c)] = torch.from_numpy(c), True
        speakers = torch.tensor([s for _, s in chunk])
        codes, mask, speakers = codes.to(device), mask.to(device), speakers.to(device)
        logits = model(codes, speakers).float()
        nll = F.cross_entropy(logits.transpose(1, 2), codes, reduction="none")
        total += float((nll * mask).sum())
        count += int(mask.sum())
    model.train(was_training)
    return total / LN2 / max(count, 1), count


# ----------------------------------------------------------------------------------------------
# Training


_PRIOR_RULES = {
    "data.crop_frames": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 1,
                         "an integer > 1"),
}


def train_prior(exp_dir: str | Path, overrides: list[str]) -> dict[str, float]:
    """Train (or resume) a code prior in ``exp_dir``; returns the final validation metrics."""
    from .experiment import check_config, fit_and_summarise, write_experiment_files

    exp_dir = Path(exp_dir)
    cfg, merged = experiment_config(exp_dir, overrides, config_name="prior_train", model_key="prior")
    check_config(cfg, sections=("seed", "train"), extra=_PRIOR_RULES)
    dist_info = init_distributed(cfg["device"])
    device = select_device(cfg["device"], dist_info.local_rank)

    codes_dir = Path(cfg["data"]["codes"]).expanduser().resolve()
    cfg["data"]["codes"] = str(codes_dir)
    meta, utts = read_codes(codes_dir, cfg["data"]["manifest"])
    train_utts = [u for u in utts if u.split == "train"]
    if not train_utts:
        raise UserError(f"The codes in {codes_dir} have no utterances in the train split.")
    valid_utts = [u for u in utts if u.split == "valid"]

    last = exp_dir / "checkpoints" / "last.pt"
    resume = load_checkpoint(last) if last.is_file() else None
    speakers = resume["speakers"] if resume else sorted({u.speaker for u in train_utts})
    torch.manual_seed(cfg["seed"])
    try:
        model = build_prior(cfg["prior"], len(speakers), int(meta["K"]))
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise UserError(f"The prior config is invalid ({first_line(exc)}); fix the prior.* values.") from None
    meta_without_ids = {k: v for k, v in meta.items() if k not in ("speakers", "splits")}
    write_experiment_files(exp_dir, cfg, merged, dist_info,
                           {"codes.json": json.dumps(meta_without_ids, indent=2) + "\n"})
    task = PriorTask(model, cfg, speakers, int(meta["K"]), train_utts, valid_utts)
    return fit_and_summarise(exp_dir, task, cfg, device, dist_info, resume,
                             extra={"arch": cfg["prior"]["arch"], "parameters": model.num_parameters()})


# ----------------------------------------------------------------------------------------------
# Sampling


def load_prior(path: str | Path, device: str = "auto"):
    """(model on device in eval mode, checkpoint dict, device) from a prior folder (its
    ``best.pt``, the lowest validation bits per code, else ``last.pt``) or a checkpoint file."""
    from .inference import resolve_checkpoint

    best = Path(path) / "checkpoints" / "best.pt"
    ckpt_path = best if best.is_file() else resolve_checkpoint(path)
    ckpt = load_checkpoint(ckpt_path)
    if ckpt.get("kind") != "prior":
        raise UserError(f"{ckpt_path} holds a {ckpt.get('kind')} model, not a prior; give the "
                        "folder of `vqspeech prior train`.")
    model = build_prior(ckpt["config"]["prior"], len(ckpt["speakers"]), int(ckpt["num_codes"]))
    model.load_state_dict(ckpt["model"])
    torch_device = select_device(device)
    return model.to(torch_device).eval(), ckpt, torch_device


def sample_prior(prior_dir: str | Path, out_dir: str | Path, *, speaker: str, seconds: float,
                 num: int = 4, candidates: int | None = None, temperature: float = 1.0,
                 top_k: int | None = None, seed: int = 0, vqvae: str | Path | None = None,
                 decode: bool = True, overwrite: bool = False, device: str = "auto") -> dict:
    """Draw ``num`` code sequences of ``seconds`` for ``speaker`` and decode them to wavs.

    With ``candidates`` > ``num``, that many are drawn and the ``num`` with the highest likelihood
    per code under the prior are kept. Writes ``OUT/codes/sample_<i>.npy``, ``OUT/sample_<i>.wav``,
    ``OUT/scores.tsv`` (every candidate: bits per code under the prior, kept or not) and
    ``OUT/samples.json`` (settings, code usage of the samples against the training data's).
    """
    out_dir = Path(out_dir)
    if (out_dir / "samples.json").exists() and not overwrite:
        raise UserError(f"{out_dir} already holds samples; pass --overwrite to replace them.")
    candidates = num if candidates is None else candidates
    for name, value in (("--num", num), ("--candidates", candidates)):
        if value < 1:
            raise UserError(f"{name} must be at least 1, not {value}.")
    if candidates < num:
        raise UserError(f"--candidates ({candidates}) must be at least --num ({num}).")
    if not seconds > 0:
        raise UserError(f"--seconds must be positive, not {seconds}.")
    if temperature < 0:
        raise UserError(f"--temperature must be >= 0, not {temperature}.")
    if top_k is not None and top_k < 1:
        raise UserError(f"--top_k must be at least 1, not {top_k}.")

    model, ckpt, torch_device = load_prior(prior_dir, device)
    speakers = ckpt["speakers"]
    if speaker not in speakers:
        raise UserError(f"Speaker '{speaker}' is unknown to this prior; choose one of: "
                        f"{', '.join(speakers[:30])}{' ...' if len(speakers) > 30 else ''}.")
    meta = json.loads((Path(prior_dir) / "codes.json").read_text()) if Path(prior_dir).is_dir() else {}
    rate = float(meta.get("code_rate_hz", 100.0))
    length = max(1, int(round(seconds * rate)))

    gen = torch.Generator(device=torch_device).manual_seed(seed)
    drawn, scores = [], []
    batch = 8
    for start in range(0, candidates, batch):
        n = min(batch, candidates - start)
        spk = torch.full((n,), speakers.index(speaker), dtype=torch.long, device=torch_device)
        codes, loglik = sample_codes(model, spk, length, temperature=temperature, top_k=top_k,
                                     generator=gen)
        drawn += list(codes.cpu().numpy())
        scores += (-loglik.cpu().numpy() / length / LN2).tolist()
    kept = np.argsort(scores, kind="stable")[:num].tolist()  # most likely first

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "codes").mkdir(exist_ok=True)
    names = {i: f"sample_{rank:02d}" for rank, i in enumerate(kept)}  # sample_00 is the best
    for i in kept:
        with atomic_path(out_dir / "codes" / f"{names[i]}.npy") as tmp:
            np.save(tmp, drawn[i].astype(np.int16))
    rows = ["candidate\tbits_per_code\tkept"] + [
        f"{i}\t{scores[i]:.4f}\t{names.get(i, '-')}" for i in range(candidates)]
    write_text_atomic(out_dir / "scores.tsv", "\n".join(rows) + "\n")

    written = []
    if decode:
        from .audio import save_wav
        from .inference import VQSpeech

        source = vqvae or meta.get("checkpoint")
        if not source or not Path(source).exists():
            raise UserError(f"The VQ-VAE these codes came from ({source}) is not there; pass "
                            "--vqvae EXP_DIR.")
        vq = VQSpeech.load(source, device)
        wavs = vq.decode_batch([drawn[i] for i in kept], [speaker] * len(kept), seed=seed,
                               progress=True)
        for i, wav in zip(kept, wavs):
            save_wav(out_dir / f"{names[i]}.wav", wav, vq.sample_rate)
            written.append(str(out_dir / f"{names[i]}.wav"))

    sample_usage = np.bincount(np.concatenate([drawn[i] for i in kept]), minlength=int(ckpt["num_codes"]))
    data_usage = np.asarray(ckpt.get("data_usage", []), dtype=np.int64)
    record = {
        "speaker": speaker, "seconds": seconds, "codes_per_sample": length, "num": num,
        "candidates": candidates, "temperature": temperature, "top_k": top_k, "seed": seed,
        "kept_bits_per_code": [round(scores[i], 4) for i in kept],
        "all_bits_per_code_mean": float(np.mean(scores)),
        "samples_codes_used": int((sample_usage > 0).sum()),
        "samples_perplexity": float(perplexity(torch.from_numpy(sample_usage))),
        "data_codes_used": int((data_usage > 0).sum()) if data_usage.size else None,
        "data_perplexity": float(perplexity(torch.from_numpy(data_usage))) if data_usage.size else None,
        "wavs": written,
    }
    write_text_atomic(out_dir / "samples.json", json.dumps(record, indent=2) + "\n")
    return record
