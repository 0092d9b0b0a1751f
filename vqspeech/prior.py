"""`vqspeech prior train|sample`: an autoregressive prior over the codes `encode` wrote.

Training reads ``codes/<id>.npy`` and ``codes.json`` (speakers, train/valid splits) and fits one of
the :mod:`vqspeech.models.prior` architectures with the shared :class:`~vqspeech.train.Trainer`
(resume, DDP, TensorBoard, progress bar). Validation reports bits per code next to the unigram
entropy of the codes: a prior that does not beat the unigram has learned nothing about sequence.

Sampling draws code sequences for a speaker by ancestral sampling, optionally keeps the best of
more candidates by the prior's own likelihood (rejection in the spirit of VQ-VAE-2), and decodes
them to audio with the VQ-VAE the codes came from.

Hierarchical codes (VQ-VAE-2: ``codes_top/<id>.npy`` and a ``"top"`` entry in ``codes.json``) take
two priors: ``data.level=top`` models the top codes alone, ``data.level=bottom`` (the default) the
bottom codes given the top ones. Sampling then draws the top codes first, the bottom codes given
them, and ranks candidates by the sum of both likelihoods.
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


LEVELS = ("bottom", "top")


@dataclass
class CodeUtterance:
    id: str
    codes: np.ndarray
    """int64 [T] (grouped codebooks: [T, G])"""
    speaker: str
    split: str
    top: np.ndarray | None = None
    """int64 [ceil(T / stride)]: the top codes above ``codes`` (hierarchical folders, bottom level)"""


def top_level(meta: dict[str, Any], codes_dir: Path) -> dict[str, Any] | None:
    """The ``"top"`` entry of a hierarchical folder's ``codes.json`` (``code_rate_hz``, ``K``,
    ``stride``), None for a flat folder; a malformed one raises UserError."""
    top = meta.get("top")
    if top is None:
        return None
    try:
        top = {"code_rate_hz": float(top["code_rate_hz"]), "K": int(top["K"]), "stride": int(top["stride"])}
    except (KeyError, TypeError, ValueError):
        top = None
    if top is None or top["K"] < 1 or top["stride"] < 1 or not top["code_rate_hz"] > 0:
        raise UserError(f"{codes_dir / 'codes.json'} has a malformed \"top\" entry ({meta['top']!r}); "
                        "expected code_rate_hz, K and stride: re-run `vqspeech encode`.")
    return top


def read_top_codes(codes_dir: Path, utts: list[CodeUtterance], top: dict[str, Any]) -> None:
    """Fill each utterance's ``top`` from ``codes_top/<id>.npy``; a missing file, a length other
    than ceil(T / stride) or a code outside the top codebook raises UserError."""
    from .eval.frames import load_codes

    for utt in utts:
        path = codes_dir / "codes_top" / f"{utt.id}.npy"
        if not path.is_file():
            raise UserError(f"{path} is missing: the folder's codes.json names a top level, so every "
                            "utterance needs its top codes; re-run `vqspeech encode`.")
        codes = load_codes(path)
        expected = -(-len(utt.codes) // top["stride"])
        if codes.ndim != 1 or len(codes) != expected or codes.max() >= top["K"]:
            raise UserError(f"{path} holds {codes.shape} codes up to {codes.max()}; expected "
                            f"{expected} codes below {top['K']} above {len(utt.codes)} bottom codes "
                            f"at stride {top['stride']}: re-run `vqspeech encode`.")
        utt.top = codes


def level_meta(meta: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """The ``codes.json`` of the top level, to sit beside a top prior: its rate, K and frame offset,
    the ``stride`` that relates it to the bottom codes, and those under ``bottom``."""
    out = {k: v for k, v in meta.items() if k != "top"}
    out.update(code_rate_hz=top["code_rate_hz"], K=top["K"], level="top", stride=top["stride"],
               bottom={k: meta[k] for k in ("code_rate_hz", "K", "hop_length") if k in meta})
    if "frame_offset_s" in meta:  # top code j covers bottom frames j*s .. (j+1)*s - 1: its centre
        out["frame_offset_s"] = 0.5 / top["code_rate_hz"]
    if "hop_length" in meta:
        out["hop_length"] = meta["hop_length"] * top["stride"]
    return out


def read_codes(codes_dir: str | Path, manifest: str | Path | None = None, level: str = "bottom"
               ) -> tuple[dict[str, Any], list[CodeUtterance]]:
    """The ``codes.json`` metadata and every utterance of an encode folder with speaker and split.

    Speakers and splits come from ``codes.json`` (written when a manifest was encoded) or, when
    given, from ``manifest``. Raises UserError when the folder or that information is missing.
    ``level`` "bottom": the codes, each with its ``top`` codes when the folder is hierarchical;
    "top": the top codes in place of the codes, and the metadata of that level (:func:`level_meta`).
    """
    from .eval.frames import read_units

    codes_dir = Path(codes_dir)
    units = read_units(codes_dir, latents=False, tuples=False)
    if not units.codes:
        raise UserError(f"{codes_dir} holds no codes/*.npy (only continuous features); a prior needs codes.")
    meta = units.meta
    top = top_level(meta, codes_dir)
    if level == "top" and top is None:
        raise UserError(f"The codes in {codes_dir} have a single level (codes.json has no \"top\" "
                        "entry), so there is no top level to model; use data.level=bottom.")
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
    if top is not None:
        read_top_codes(codes_dir, utts, top)
    if level == "top":
        return level_meta(meta, top), [CodeUtterance(u.id, u.top, u.speaker, u.split) for u in utts]
    return meta, utts


def code_usage(sequences: list[np.ndarray], num_codes: int) -> np.ndarray:
    """How often each code occurs: [K] counts; grouped codes [T, G] -> [G * K], group g's at g*K."""
    codes = np.concatenate(sequences)
    if codes.ndim == 2:
        codes = codes + np.arange(codes.shape[1]) * num_codes
    return np.bincount(codes.reshape(-1), minlength=num_codes * (1 if codes.ndim == 1 else codes.shape[1]))


def unigram_bits(train: list[np.ndarray], test: list[np.ndarray], num_codes: int) -> float:
    """Cross-entropy (bits per code) of ``test`` under the add-one unigram of ``train``; grouped
    codes [T, G]: the sum over groups of each group's (bits per code tuple)."""
    if train[0].ndim == 2:
        return sum(unigram_bits([c[:, g] for c in train], [c[:, g] for c in test], num_codes)
                   for g in range(train[0].shape[1]))
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
                 train_utts: list[CodeUtterance], valid_utts: list[CodeUtterance], level: str = "bottom"):
        self.model, self.config, self.speakers, self.num_codes = model, config, speakers, num_codes
        self.level = level
        self.stride = model.top_stride if model.conditioned else 1  # bottom codes per top code
        self.speaker_ids = {s: i for i, s in enumerate(speakers)}
        self.train_utts = train_utts
        self.valid_utts = [u for u in valid_utts if u.speaker in self.speaker_ids]
        self.crop = int(config["data"]["crop_frames"])
        lengths = np.array([len(u.codes) for u in train_utts], dtype=np.float64)
        self.weights = lengths / lengths.sum()
        self.data_usage = code_usage([u.codes for u in train_utts], num_codes)
        reference = self.valid_utts or train_utts
        self.unigram = unigram_bits([u.codes for u in train_utts], [u.codes for u in reference],
                                    num_codes)

    def batches(self, start_step: int, rank: int, device: torch.device) -> Iterator[Any]:
        """Random crops of ``crop_frames`` codes; utterances drawn in proportion to length. A pure
        function of (seed, step, rank), so a resumed run continues the same data order.

        Yields (codes [B, crop], speakers [B], mask [B, crop]), plus top [B, ceil(crop / stride)]
        for a conditioned prior: crops then start at multiples of the stride, so that top code
        ``offset // stride`` is the first one above the crop (padding: zeros, masked out)."""
        batch_size, seed, stride = self.config["train"]["batch_size"], self.config["seed"], self.stride
        step = start_step
        while True:
            rng = np.random.default_rng([seed, step, rank])
            picks = rng.choice(len(self.train_utts), size=batch_size, p=self.weights)
            codes = np.zeros((batch_size, self.crop, *self.train_utts[0].codes.shape[1:]), dtype=np.int64)
            mask = np.zeros((batch_size, self.crop), dtype=bool)
            speakers = np.zeros(batch_size, dtype=np.int64)
            top = (np.zeros((batch_size, -(-self.crop // stride)), dtype=np.int64)
                   if self.model.conditioned else None)
            for row, index in enumerate(picks):
                utt = self.train_utts[index]
                # stride 1: the same draws as an unconditioned prior's (offsets 0 .. T - crop)
                offset = stride * int(rng.integers(0, max(1, (len(utt.codes) - self.crop) // stride + 1)))
                piece = utt.codes[offset: offset + self.crop]
                codes[row, : len(piece)], mask[row, : len(piece)] = piece, True
                speakers[row] = self.speaker_ids[utt.speaker]
                if top is not None:
                    above = utt.top[offset // stride: offset // stride + top.shape[1]]
                    top[row, : len(above)] = above
            step += 1
            batch = (torch.from_numpy(codes).to(device), torch.from_numpy(speakers).to(device),
                     torch.from_numpy(mask).to(device))
            yield batch if top is None else (*batch, torch.from_numpy(top).to(device))

    def loss(self, model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor | int]]:
        codes, speakers, mask, *top = batch  # top: [] or [top codes [B, ceil(crop / stride)]]
        nll = code_nll(model(codes, speakers, *top), codes)
        loss = (nll * mask).sum() / mask.sum()
        return loss, {"bits": loss.detach() / LN2, "samples": mask.sum()}

    @torch.no_grad()
    def validate(self, model, device) -> dict[str, float]:
        """Teacher-forced bits per code on the validation utterances (each cut into pieces of
        ``crop_frames``, every piece starting from the start token), and the unigram's."""
        limit = self.config["train"]["valid_max_utterances"]
        utts = (self.valid_utts or self.train_utts)[:limit]
        tops = [u.top for u in utts] if self.model.conditioned else None
        bits, count = prior_bits(model, [(u.codes, self.speaker_ids[u.speaker]) for u in utts],
                                 self.crop, self.config["train"]["batch_size"], device, tops=tops,
                                 stride=self.stride)
        return {"bits_per_code": bits, "unigram_bits_per_code": self.unigram, "codes": count}

    @torch.no_grad()
    def log_media(self, model, writer, step: int, device: torch.device) -> None:
        """Usage of codes drawn from the prior (one crop per speaker, up to 8) against the data's."""
        model.eval()
        speakers = torch.arange(min(8, len(self.speakers)), device=device)
        gen = torch.Generator(device=device).manual_seed(step)
        top = self._media_top(speakers.tolist()).to(device) if self.model.conditioned else None
        drawn, _ = sample_codes(model, speakers, self.crop, top=top, generator=gen)
        usage = code_usage(list(drawn.cpu().numpy()), self.num_codes)
        writer.add_histogram("sample/codes", drawn.cpu().reshape(-1), step)
        writer.add_scalar("sample/codes_used", int((usage > 0).sum()), step)
        writer.add_scalar("sample/perplexity", float(perplexity(torch.from_numpy(usage))), step)
        model.train()

    def _media_top(self, speakers: list[int]) -> torch.Tensor:
        """Top codes [len(speakers), ceil(crop / stride)] to condition media samples on: the start
        of each speaker's first training utterance (zero-padded)."""
        first = {}
        for utt in self.train_utts:
            first.setdefault(self.speaker_ids[utt.speaker], utt)
        top = torch.zeros(len(speakers), -(-self.crop // self.stride), dtype=torch.long)
        for row, spk in enumerate(speakers):
            above = first.get(spk, self.train_utts[0]).top[: top.shape[1]]
            top[row, : len(above)] = torch.from_numpy(above)
        return top

    def checkpoint_fields(self) -> dict[str, Any]:
        fields = {"speakers": list(self.speakers), "num_codes": self.num_codes,
                  "data_usage": self.data_usage.tolist(), "level": self.level, "groups": self.model.groups}
        if self.model.conditioned:
            fields["top"] = {"num_codes": self.model.top_codes, "stride": self.model.top_stride}
        return fields


def code_nll(logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood in nats per step [B, T] of codes [B, T] under logits [B, T, K];
    grouped codes [B, T, G] under logits [B, T, G, K]: summed over the groups."""
    if codes.dim() == 3:
        return F.cross_entropy(logits.permute(0, 3, 1, 2).float(), codes, reduction="none").sum(-1)
    return F.cross_entropy(logits.transpose(1, 2).float(), codes, reduction="none")


@torch.no_grad()
def prior_bits(model, sequences: list[tuple[np.ndarray, int]], crop: int, batch_size: int,
               device: torch.device, tops: list[np.ndarray] | None = None, stride: int = 1
               ) -> tuple[float, int]:
    """(bits per code, number of codes) of ``(codes [T], speaker id)`` sequences under ``model``
    (grouped codes [T, G]: bits per code tuple, number of tuples).

    A conditioned model also gets each sequence's top codes ``tops`` (int [ceil(T / stride)]); each
    piece of ``crop`` codes (a multiple of ``stride``) sees the top codes above it."""
    was_training = model.training
    model.eval()
    tops = tops if tops is not None else [None] * len(sequences)
    pieces = [(codes[i: i + crop], spk, None if top is None else top[i // stride: (i + crop) // stride])
              for (codes, spk), top in zip(sequences, tops) for i in range(0, len(codes), crop)]
    total, count = 0.0, 0
    for start in range(0, len(pieces), batch_size):
        chunk = pieces[start: start + batch_size]
        length = max(len(c) for c, _, _ in chunk)
        codes = torch.zeros(len(chunk), length, *chunk[0][0].shape[1:], dtype=torch.long)
        mask = torch.zeros(len(chunk), length, dtype=torch.bool)
        top = torch.zeros(len(chunk), -(-length // stride), dtype=torch.long)
        for row, (c, _, above) in enumerate(chunk):
            codes[row, : len(c)], mask[row, : len(c)] = torch.from_numpy(c), True
            if above is not None:
                top[row, : len(above)] = torch.from_numpy(above)
        speakers = torch.tensor([s for _, s, _ in chunk])
        codes, mask, speakers = codes.to(device), mask.to(device), speakers.to(device)
        conditioning = () if chunk[0][2] is None else (top.to(device),)
        nll = code_nll(model(codes, speakers, *conditioning), codes)
        total += float((nll * mask).sum())
        count += int(mask.sum())
    model.train(was_training)
    return total / LN2 / max(count, 1), count


# ----------------------------------------------------------------------------------------------
# Training


_PRIOR_RULES = {
    "data.crop_frames": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 1,
                         "an integer > 1"),
    "data.level": (lambda v: v in LEVELS, " or ".join(LEVELS)),
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
    level = cfg["data"]["level"]
    meta, utts = read_codes(codes_dir, cfg["data"]["manifest"], level)
    top = top_level(meta, codes_dir) if level == "bottom" else None  # conditioned on the top codes
    crop = cfg["data"]["crop_frames"]
    if top is not None and crop % top["stride"]:
        fixed = -(-crop // top["stride"]) * top["stride"]
        raise UserError(f"data.crop_frames={crop} is not a multiple of the top codes' stride "
                        f"{top['stride']}; set data.crop_frames={fixed} (or another multiple).")
    train_utts = [u for u in utts if u.split == "train"]
    if not train_utts:
        raise UserError(f"The codes in {codes_dir} have no utterances in the train split.")
    valid_utts = [u for u in utts if u.split == "valid"]

    last = exp_dir / "checkpoints" / "last.pt"
    resume = load_checkpoint(last) if last.is_file() else None
    groups = int(meta.get("groups", 1))
    if resume and ((resume.get("level", "bottom"), resume.get("top"), resume.get("groups", 1))
                   != (level, _top_fields(top), groups)):
        raise UserError(f"{exp_dir} was trained on other codes (level {resume.get('level', 'bottom')}, "
                        f"top {resume.get('top')}, groups {resume.get('groups', 1)}); use a new folder "
                        f"for data.level={level} on {codes_dir}.")
    speakers = resume["speakers"] if resume else sorted({u.speaker for u in train_utts})
    torch.manual_seed(cfg["seed"])
    try:
        model = build_prior(cfg["prior"], len(speakers), int(meta["K"]), groups=groups,
                            **_conditioning(_top_fields(top)))
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise UserError(f"The prior config is invalid ({first_line(exc)}); fix the prior.* values.") from None
    meta_without_ids = {k: v for k, v in meta.items() if k not in ("speakers", "splits")}
    if top is not None:
        meta_without_ids["level"] = "bottom"
    write_experiment_files(exp_dir, cfg, merged, dist_info,
                           {"codes.json": json.dumps(meta_without_ids, indent=2) + "\n"})
    task = PriorTask(model, cfg, speakers, int(meta["K"]), train_utts, valid_utts, level=level)
    return fit_and_summarise(exp_dir, task, cfg, device, dist_info, resume,
                             extra={"arch": cfg["prior"]["arch"], "parameters": model.num_parameters()})


def _top_fields(top: dict[str, Any] | None) -> dict[str, int] | None:
    """The checkpoint's record of a bottom prior's conditioning (None: unconditioned)."""
    return None if top is None else {"num_codes": top["K"], "stride": top["stride"]}


def _conditioning(fields: dict[str, int] | None) -> dict[str, int]:
    """``build_prior``'s keywords for a checkpoint's ``top`` record (none: unconditioned)."""
    return {"top_codes": int(fields["num_codes"]), "top_stride": int(fields["stride"])} if fields else {}


# ----------------------------------------------------------------------------------------------
# Sampling


def load_prior(path: str | Path, device: str = "auto"):
    """(model on device in eval mode, checkpoint dict, device) from a prior folder (its
    ``best.pt``, the lowest validation bits per code, else ``last.pt``) or a checkpoint file.
    A bottom prior whose checkpoint records ``top`` is rebuilt conditioned on top codes."""
    from .inference import resolve_checkpoint

    best = Path(path) / "checkpoints" / "best.pt"
    ckpt_path = best if best.is_file() else resolve_checkpoint(path)
    ckpt = load_checkpoint(ckpt_path)
    if ckpt.get("kind") != "prior":
        raise UserError(f"{ckpt_path} holds a {ckpt.get('kind')} model, not a prior; give the "
                        "folder of `vqspeech prior train`.")
    model = build_prior(ckpt["config"]["prior"], len(ckpt["speakers"]), int(ckpt["num_codes"]),
                        groups=int(ckpt.get("groups", 1)), **_conditioning(ckpt.get("top")))
    model.load_state_dict(ckpt["model"])
    torch_device = select_device(device)
    return model.to(torch_device).eval(), ckpt, torch_device


def load_top_prior(top_prior: str | Path | None, prior_dir: str | Path, ckpt: dict[str, Any], device: str):
    """The top prior (model, checkpoint) that a bottom prior with checkpoint ``ckpt`` needs, or
    (None, None) for a prior that is not conditioned; any mismatch raises UserError."""
    conditioning = ckpt.get("top")
    if conditioning is None:
        if top_prior is not None:
            raise UserError(f"--top_prior is only for a bottom prior conditioned on top codes, and "
                            f"{prior_dir} is not one; leave --top_prior out.")
        return None, None
    if top_prior is None:
        raise UserError(f"{prior_dir} models bottom codes given top codes; pass --top_prior DIR, the "
                        "prior trained with data.level=top on the same codes.")
    model, top_ckpt, _ = load_prior(top_prior, device)
    if top_ckpt.get("level", "bottom") != "top":
        raise UserError(f"--top_prior {top_prior} is not a top-level prior; give the folder trained "
                        "with data.level=top on the same codes.")
    if int(top_ckpt["num_codes"]) != int(conditioning["num_codes"]):
        raise UserError(f"--top_prior {top_prior} models {top_ckpt['num_codes']} top codes, but "
                        f"{prior_dir} is conditioned on {conditioning['num_codes']}; give the top "
                        "prior of the same codes.")
    if list(top_ckpt["speakers"]) != list(ckpt["speakers"]):
        raise UserError(f"{prior_dir} and --top_prior {top_prior} were trained for different speaker "
                        "lists; train both on the same codes folder.")
    top_meta = Path(top_prior) / "codes.json"
    stride = json.loads(top_meta.read_text()).get("stride") if top_meta.is_file() else None
    if stride is not None and int(stride) != int(conditioning["stride"]):
        raise UserError(f"--top_prior {top_prior} models top codes at stride {stride}, but {prior_dir} "
                        f"is conditioned on stride {conditioning['stride']}; give the top prior of the "
                        "same codes.")
    return model, top_ckpt


def sample_prior(prior_dir: str | Path, out_dir: str | Path, *, speaker: str, seconds: float,
                 num: int = 4, candidates: int | None = None, temperature: float = 1.0,
                 top_k: int | None = None, seed: int = 0, vqvae: str | Path | None = None,
                 decode: bool = True, overwrite: bool = False, device: str = "auto",
                 top_prior: str | Path | None = None) -> dict:
    """Draw ``num`` code sequences of ``seconds`` for ``speaker`` and decode them to wavs.

    With ``candidates`` > ``num``, that many are drawn and the ``num`` with the highest likelihood
    per code under the prior are kept. Writes ``OUT/codes/sample_<i>.npy``, ``OUT/sample_<i>.wav``,
    ``OUT/scores.tsv`` (every candidate: bits per code under the prior, kept or not) and
    ``OUT/samples.json`` (settings, code usage of the samples against the training data's).

    A bottom prior conditioned on top codes needs ``top_prior`` (trained with ``data.level=top``):
    each candidate's ceil(L / stride) top codes are drawn from it first (same temperature and
    top_k), then its L bottom codes given them; the score is the sum of both likelihoods per bottom
    code, the top codes go to ``OUT/codes_top/`` and both levels to the decoder. A top-level prior
    can be sampled alone with ``decode=False``.
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
    top_model, _ = load_top_prior(top_prior, prior_dir, ckpt, device)
    if decode and ckpt.get("level", "bottom") == "top":
        raise UserError(f"{prior_dir} models top codes only, which cannot be decoded without bottom "
                        f"codes; pass --codes_only, or sample a bottom prior with --top_prior {prior_dir}.")
    speakers = ckpt["speakers"]
    if speaker not in speakers:
        raise UserError(f"Speaker '{speaker}' is unknown to this prior; choose one of: "
                        f"{', '.join(speakers[:30])}{' ...' if len(speakers) > 30 else ''}.")
    meta = json.loads((Path(prior_dir) / "codes.json").read_text()) if Path(prior_dir).is_dir() else {}
    rate = float(meta.get("code_rate_hz", 100.0))
    length = max(1, int(round(seconds * rate)))
    stride = model.top_stride if model.conditioned else 1
    top_length = -(-length // stride)

    gen = torch.Generator(device=torch_device).manual_seed(seed)
    drawn, tops, scores, top_bits, bottom_bits = [], [], [], [], []
    batch = 8
    for start in range(0, candidates, batch):
        n = min(batch, candidates - start)
        spk = torch.full((n,), speakers.index(speaker), dtype=torch.long, device=torch_device)
        top, top_loglik = None, 0
        if top_model is not None:
            top, top_loglik = sample_codes(top_model, spk, top_length, temperature=temperature,
                                           top_k=top_k, generator=gen)
            tops += list(top.cpu().numpy())
            top_bits += (-top_loglik.cpu().numpy() / top_length / LN2).tolist()
        codes, loglik = sample_codes(model, spk, length, top=top, temperature=temperature, top_k=top_k,
                                     generator=gen)
        drawn += list(codes.cpu().numpy())
        bottom_bits += (-loglik.cpu().numpy() / length / LN2).tolist()
        scores += (-(loglik + top_loglik).cpu().numpy() / length / LN2).tolist()
    kept = np.argsort(scores, kind="stable")[:num].tolist()  # most likely first

    out_dir.mkdir(parents=True, exist_ok=True)
    names = {i: f"sample_{rank:02d}" for rank, i in enumerate(kept)}  # sample_00 is the best
    for folder, arrays in (("codes", drawn), ("codes_top", tops)):
        if arrays:
            (out_dir / folder).mkdir(exist_ok=True)
        for i in kept if arrays else []:
            with atomic_path(out_dir / folder / f"{names[i]}.npy") as tmp:
                np.save(tmp, arrays[i].astype(np.int16))
    write_text_atomic(out_dir / "scores.tsv", _scores_table(scores, names, top_bits, bottom_bits))

    written = []
    if decode:
        from .audio import save_wav
        from .inference import HierarchicalCodes, VQSpeech

        source = vqvae or meta.get("checkpoint")
        if not source or not Path(source).exists():
            raise UserError(f"The VQ-VAE these codes came from ({source}) is not there; pass "
                            "--vqvae EXP_DIR.")
        vq = VQSpeech.load(source, device)
        codes = [HierarchicalCodes(drawn[i], tops[i]) if tops else drawn[i] for i in kept]
        wavs = vq.decode_batch(codes, [speaker] * len(kept), seed=seed, progress=True)
        for i, wav in zip(kept, wavs):
            save_wav(out_dir / f"{names[i]}.wav", wav, vq.sample_rate)
            written.append(str(out_dir / f"{names[i]}.wav"))

    sample_usage = code_usage([drawn[i] for i in kept], int(ckpt["num_codes"]))
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
    if ckpt.get("level", "bottom") == "top":
        record["level"] = "top"
    if top_model is not None:
        record.update(top_prior=str(top_prior), stride=stride, top_codes_per_sample=top_length,
                      kept_top_bits_per_top_code=[round(top_bits[i], 4) for i in kept])
    write_text_atomic(out_dir / "samples.json", json.dumps(record, indent=2) + "\n")
    return record


def _scores_table(scores: list[float], names: dict[int, str], top_bits: list[float],
                  bottom_bits: list[float]) -> str:
    """``scores.tsv``: candidate, bits per code (the ranking score), kept name or '-'; with a top
    prior also each level's own bits (top: per top code, bottom: per bottom code given the top)."""
    header = "candidate\tbits_per_code\tkept"
    rows = [f"{i}\t{scores[i]:.4f}\t{names.get(i, '-')}" for i in range(len(scores))]
    if top_bits:
        header += "\ttop_bits_per_top_code\tbottom_bits_per_code"
        rows = [f"{row}\t{top_bits[i]:.4f}\t{bottom_bits[i]:.4f}" for i, row in enumerate(rows)]
    return "\n".join([header] + rows) + "\n"
