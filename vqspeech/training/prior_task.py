"""`vqspeech prior train`: an autoregressive prior over the codes `encode` wrote.

Training reads a codes folder (:mod:`vqspeech.data.codes`; speakers and train/valid splits from
its ``codes.json`` or a manifest) and fits one of the :mod:`vqspeech.models.prior` architectures
with the shared :class:`~vqspeech.training.trainer.Trainer` (resume, DDP, TensorBoard, progress
bar). Validation reports bits per code next to the unigram entropy of the codes: a prior that does
not beat the unigram has learned nothing about sequence.

Hierarchical codes (VQ-VAE-2: ``codes_top/`` and a ``top`` entry in ``codes.json``) take two
priors: ``data.level=top`` models the top codes alone, ``data.level=bottom`` (the default) the
bottom codes given the top ones. Sampling lives in :mod:`vqspeech.inference.prior_sampling`;
both it and resuming read a prior's checkpoint through :func:`load_prior_checkpoint`, which checks
the fields :meth:`PriorTask.checkpoint_fields` writes, and build it with
:func:`prior_from_checkpoint`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.tensorboard import SummaryWriter

from ..checkpoint import codebook_digest, load_checkpoint, weights_problem
from ..config import experiment_config
from ..data.codes import (
    LEVELS,
    MAX_CODES,
    MAX_GROUPS,
    MAX_STRIDE,
    CodesFolder,
    CodesInfo,
    Encoding,
    code_usage,
    unigram_bits,
)
from ..data.manifest import read_manifest
from ..device import init_distributed, select_device
from ..errors import UserError, first_line
from ..fileio import check_results_home, overlapping
from ..models.prior import CodePrior, build_prior, sample_codes
from ..models.quantizer import perplexity
from .experiment import (
    absolute_path,
    check_resumable,
    fit_and_summarise,
    known_speakers_only,
    lock_on_every_rank,
    write_experiment_files,
)
from .schema import PRIOR_ARCH_RULES, PRIOR_RULES, check_prior_config, check_rules
from .trainer import Task, data_record

LN2 = math.log(2.0)


def read_prior_data(
    codes_dir: str | Path, manifest: str | Path | None = None, level: str = "bottom"
) -> tuple[CodesInfo, list[Encoding]]:
    """The info and every utterance (codes, speaker and split) of a codes folder, for a prior.

    Speakers and splits come from ``codes.json`` (written when a manifest was encoded) or, when
    given, from ``manifest``. ``level`` "bottom": the codes, each with its top codes when the
    folder is hierarchical; "top": the top codes in place of the codes, and the info of that level.
    Raises UserError when the folder or that information is missing.
    """
    codes_dir = Path(codes_dir)
    folder = CodesFolder.open(codes_dir)
    if not folder.code_ids:
        raise UserError(f"{codes_dir} holds no codes/*.npy (only continuous features); a prior needs codes.")
    info = folder.info
    if level == "top" and info.top is None:
        raise UserError(
            f'The codes in {codes_dir} have a single level (codes.json has no "top" '
            "entry), so there is no top level to model; use data.level=bottom."
        )
    speakers, splits = info.speakers, info.splits
    if manifest is not None:
        utts = read_manifest(manifest)
        speakers = {u.id: u.speaker for u in utts}
        splits = {u.id: u.split for u in utts}
    if not speakers or not splits:
        raise UserError(
            f"The codes in {codes_dir} carry no speakers or splits (they were not "
            "encoded from a manifest); re-run encode on the manifest or pass "
            "data.manifest=MANIFEST."
        )
    ids = [i for i in folder.code_ids if i in speakers and i in splits]
    if not ids:
        raise UserError(
            f"No code files of {codes_dir}/codes match the speakers and splits known "
            "for them; check that the codes and the manifest belong together."
        )
    encodings = []
    for i in ids:
        encoding = folder.read(i)
        encoding.speaker, encoding.split = speakers[i], splits[i]
        encodings.append(encoding)
    if level == "top":
        return info.top_level(), [
            Encoding(e.top, speaker=e.speaker, split=e.split) for e in encodings if e.top is not None
        ]
    return info, encodings


class PriorTask(Task):
    """What the trainer needs to know about a code prior: batches, loss, validation, media.
    ``train_utts`` and ``valid_utts``: encodings with their speakers (and, for a prior conditioned
    on top codes, their top codes)."""

    kind = "prior"
    progress_keys = ("bits",)
    memory_fix = "lower train.batch_size or data.crop_frames (or the prior's size)"
    best_metric = "bits_per_code"  # small corpora overfit: checkpoints/best.pt is what sampling uses
    model: CodePrior

    def __init__(
        self,
        model: CodePrior,
        config: dict[str, Any],
        speakers: list[str],
        num_codes: int,
        train_utts: list[Encoding],
        valid_utts: list[Encoding],
        level: str = "bottom",
        codes_info: CodesInfo | None = None,
    ):
        self.model, self.config, self.speakers, self.num_codes = model, config, speakers, num_codes
        self.level = level
        self.codes_info = codes_info  # the codes.json of the codes learned (no ids), kept in every checkpoint
        self.stride = model.top_stride if model.conditioned else 1  # bottom codes per top code
        self.speaker_ids = {s: i for i, s in enumerate(speakers)}
        self.train_utts = train_utts
        self.valid_utts = known_speakers_only(valid_utts, self.speaker_ids)
        self.crop = int(config["data"]["crop_frames"])
        lengths = np.array([len(u.codes) for u in train_utts], dtype=np.float64)
        self.weights = lengths / lengths.sum()
        self.data_usage = code_usage([u.codes for u in train_utts], num_codes)
        reference = self.valid_utts or train_utts
        self.unigram = unigram_bits([u.codes for u in train_utts], [u.codes for u in reference], num_codes)

    def _speaker_id(self, utt: Encoding) -> int:
        if utt.speaker is None:
            raise ValueError("a prior's training and validation codes need their speakers")
        return self.speaker_ids[utt.speaker]

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
            top = np.zeros((batch_size, -(-self.crop // stride)), dtype=np.int64) if self.model.conditioned else None
            for row, index in enumerate(picks):
                utt = self.train_utts[index]
                # stride 1: the same draws as an unconditioned prior's (offsets 0 .. T - crop)
                offset = stride * int(rng.integers(0, max(1, (len(utt.codes) - self.crop) // stride + 1)))
                piece = utt.codes[offset : offset + self.crop]
                codes[row, : len(piece)], mask[row, : len(piece)] = piece, True
                speakers[row] = self.speaker_ids[utt.speaker]
                if top is not None:
                    above = utt.top[offset // stride : offset // stride + top.shape[1]]
                    top[row, : len(above)] = above
            step += 1
            batch = (
                torch.from_numpy(codes).to(device),
                torch.from_numpy(speakers).to(device),
                torch.from_numpy(mask).to(device),
            )
            yield batch if top is None else (*batch, torch.from_numpy(top).to(device))

    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor | int]]:
        codes, speakers, mask, *top = batch  # top: [] or [top codes [B, ceil(crop / stride)]]
        nll = code_nll(model(codes, speakers, *top), codes)
        loss = (nll * mask).sum() / mask.sum()
        return loss, {"bits": loss.detach() / LN2, "samples": mask.sum()}

    @torch.no_grad()
    def validate(self, model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        """Teacher-forced bits per code on the validation utterances (each cut into pieces of
        ``crop_frames``, every piece starting from the start token), and the unigram's."""
        if not self.valid_utts:  # no validation split: nothing to report (train bits are not validation)
            return {}
        limit = self.config["train"]["valid_max_utterances"]
        utts = self.valid_utts[:limit]
        tops = [u.top for u in utts] if self.model.conditioned else None
        bits, count = prior_bits(
            model,
            [(u.codes, self._speaker_id(u)) for u in utts],
            self.crop,
            self.config["train"]["batch_size"],
            device,
            tops=tops,
            stride=self.stride,
        )
        return {"bits_per_code": bits, "unigram_bits_per_code": self.unigram, "codes": count}

    @torch.no_grad()
    def log_media(self, model: torch.nn.Module, writer: SummaryWriter, step: int, device: torch.device) -> None:
        """Usage of codes drawn from the prior (one crop per speaker, up to 8) against the data's."""
        if not isinstance(model, CodePrior):
            raise TypeError(f"PriorTask samples from a CodePrior, not a {type(model).__name__}")
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
        first: dict[int, Encoding] = {}
        for utt in self.train_utts:
            first.setdefault(self._speaker_id(utt), utt)
        top = torch.zeros(len(speakers), -(-self.crop // self.stride), dtype=torch.long)
        for row, spk in enumerate(speakers):
            utt_top = first.get(spk, self.train_utts[0]).top
            if utt_top is None:
                raise ValueError("a prior conditioned on top codes needs the top codes of its training utterances")
            above = utt_top[: top.shape[1]]
            top[row, : len(above)] = torch.from_numpy(above)
        return top

    def data_record(self) -> dict[str, Any]:
        def row(utt: Encoding) -> tuple[str, str, int]:  # the codes themselves: encoded again is other data
            content = hashlib.sha256(np.ascontiguousarray(utt.codes).tobytes()).hexdigest()[:16]
            return content, str(utt.speaker), len(utt)

        return data_record([row(u) for u in self.train_utts], [row(u) for u in self.valid_utts])

    def checkpoint_fields(self) -> dict[str, Any]:
        fields = {
            "speakers": list(self.speakers),
            "num_codes": self.num_codes,
            "data_usage": self.data_usage.tolist(),
            "level": self.level,
            "groups": self.model.groups,
        }
        if self.model.conditioned:
            fields["top"] = {"num_codes": self.model.top_codes, "stride": self.model.top_stride}
        if self.codes_info is not None:  # which VQ-VAE made the codes, also for a checkpoint copied elsewhere
            fields["codes_info"] = self.codes_info.to_json()
        return fields


# ----------------------------------------------------------------------------------------------
# Reading a prior's checkpoint: the fields PriorTask.checkpoint_fields writes, checked


def _codes_origin(info: CodesInfo) -> dict[str, Any]:
    """What makes two codes folders the same vocabulary: the model that made them (its path and its
    codebook's digest), K, groups, rate."""
    return {
        "checkpoint": info.checkpoint,
        "codebook": info.codebook,
        "num_codes": info.num_codes,
        "groups": info.groups,
        "code_rate_hz": info.code_rate_hz,
    }


def _origins(learned: CodesInfo, current: CodesInfo) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`_codes_origin` of the codes a prior learned and of today's, comparable: a prior
    trained before codes.json recorded the codebook is compared without it."""
    before, now = _codes_origin(learned), _codes_origin(current)
    if before["codebook"] is None:
        now["codebook"] = None
    return before, now


def trained_on_other_codes(prior_dir: str | Path, codes_dir: str | Path) -> bool:
    """Whether the prior in ``prior_dir`` learned codes other than those now in ``codes_dir`` (made
    by another model, or encoded again after the model's codebook changed), so it cannot resume on
    them: the recipes then train a new prior."""
    saved, current = Path(prior_dir) / "codes.json", Path(codes_dir) / "codes.json"
    if not saved.is_file() or not current.is_file():
        return False
    before, now = _origins(CodesInfo.load(saved), CodesInfo.load(current))
    return before != now


def load_prior_checkpoint(path: Path) -> dict[str, Any]:
    """A prior's checkpoint (for sampling or resuming), its fields checked: UserError, one
    sentence naming ``path``, for another model's checkpoint or a damaged or crafted one."""
    ckpt = load_checkpoint(path)
    if ckpt.get("kind") != "prior":
        raise UserError(
            f"{path} holds a {ckpt.get('kind')} model, not a prior; give the folder of `vqspeech prior train`."
        )
    problem = _checkpoint_problem(ckpt)
    if problem is not None:
        raise _unusable(path, problem)
    return ckpt


def _unusable(path: Path, problem: str) -> UserError:
    return UserError(f"{path} does not hold a usable prior ({problem}); train it again with `vqspeech prior train`.")


def _is_count(value: Any, at_least: int, at_most: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and at_least <= value <= at_most


def _checkpoint_problem(ckpt: dict[str, Any]) -> str | None:
    """What is wrong with a prior checkpoint's fields (speakers, level, num_codes, groups, top,
    data_usage, the prior config against the schema, weights), or None. The sizes are bounded as
    in ``codes.json`` (:mod:`vqspeech.data.codes`)."""
    top = ckpt.get("top")
    if not ckpt.get("speakers"):
        return "it names no speakers"
    if ckpt.get("level") not in LEVELS:
        return f"its level is {ckpt.get('level')!r}, not {' or '.join(LEVELS)}"
    if not _is_count(ckpt.get("num_codes"), 2, MAX_CODES):
        return f"its num_codes is {ckpt.get('num_codes')!r}, not an integer from 2 to {MAX_CODES}"
    if not _is_count(ckpt.get("groups"), 1, MAX_GROUPS):
        return f"its groups is {ckpt.get('groups')!r}, not an integer from 1 to {MAX_GROUPS}"
    if top is not None and not (
        isinstance(top, dict)
        and _is_count(top.get("num_codes"), 2, MAX_CODES)
        and _is_count(top.get("stride"), 1, MAX_STRIDE)
        and ckpt["level"] == "bottom"
    ):
        return f"its top is {top!r}, not the num_codes and stride of the top codes above a bottom prior"
    usage = ckpt.get("data_usage", [])
    if not (isinstance(usage, list) and all(_is_count(n, 0, 2**63 - 1) for n in usage)):
        return "its data_usage is not a list of code counts"
    if not isinstance(ckpt.get("model"), dict):
        return "it holds no weights"
    return _prior_config_problem(ckpt.get("config"))


def _prior_config_problem(config: Any) -> str | None:
    """What breaks the schema's rules in the ``prior`` section of a checkpoint's config, or None."""
    if not isinstance(config, dict) or not isinstance(config.get("prior"), dict):
        return "its config has no prior section"
    general = {key: rule for key, rule in PRIOR_RULES.items() if key.startswith("prior.")}
    try:
        check_rules(config, general)
        check_rules(config, PRIOR_ARCH_RULES[config["prior"]["arch"]])
    except UserError as exc:  # "Config value prior.layers=0 must be ...": the sentence as a clause
        sentence = str(exc).rstrip(".")
        return sentence[0].lower() + sentence[1:]
    return None


def prior_from_checkpoint(ckpt: dict[str, Any], path: Path) -> CodePrior:
    """The prior a checkpoint checked by :func:`load_prior_checkpoint` holds, its weights loaded (a
    bottom prior whose checkpoint records ``top`` is rebuilt conditioned on top codes). The model's
    shapes are compared with the weights' on the meta device first, so a config asking for more
    than its weights hold allocates nothing; any failure is one sentence naming ``path``."""
    top = ckpt.get("top")

    def build() -> CodePrior:
        return build_prior(
            ckpt["config"]["prior"],
            len(ckpt["speakers"]),
            ckpt["num_codes"],
            groups=ckpt["groups"],
            top_codes=top["num_codes"] if top else 0,
            top_stride=top["stride"] if top else 1,
        )

    try:
        with torch.device("meta"):
            problem = weights_problem(build(), ckpt["model"])
        if problem is not None:
            raise ValueError(problem)
        model = build()
        model.load_state_dict(ckpt["model"])
    except Exception as exc:  # a crafted or damaged checkpoint can fail anywhere in building
        raise _unusable(path, first_line(exc)[:100]) from None
    return model


def code_nll(logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood in nats per step [B, T] of codes [B, T] under logits [B, T, K];
    grouped codes [B, T, G] under logits [B, T, G, K]: summed over the groups."""
    if codes.dim() == 3:
        return F.cross_entropy(logits.permute(0, 3, 1, 2).float(), codes, reduction="none").sum(-1)
    return F.cross_entropy(logits.transpose(1, 2).float(), codes, reduction="none")


@torch.no_grad()
def prior_bits(
    model,
    sequences: list[tuple[np.ndarray, int]],
    crop: int,
    batch_size: int,
    device: torch.device,
    tops: list[np.ndarray | None] | None = None,
    stride: int = 1,
) -> tuple[float, int]:
    """(bits per code, number of codes) of ``(codes [T], speaker id)`` sequences under ``model``
    (grouped codes [T, G]: bits per code tuple, number of tuples).

    A conditioned model also gets each sequence's top codes ``tops`` (int [ceil(T / stride)]); each
    piece of ``crop`` codes (a multiple of ``stride``) sees the top codes above it."""
    was_training = model.training
    model.eval()
    tops = tops if tops is not None else [None] * len(sequences)
    pieces = [
        (codes[i : i + crop], spk, None if top is None else top[i // stride : (i + crop) // stride])
        for (codes, spk), top in zip(sequences, tops, strict=True)
        for i in range(0, len(codes), crop)
    ]
    total, count = 0.0, 0
    for start in range(0, len(pieces), batch_size):
        chunk = pieces[start : start + batch_size]
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


def _check_codebook_current(codes_dir: Path, info: CodesInfo) -> None:
    """UserError when the model that encoded the codes is still there but its codebook has moved on
    (it trained on since): a prior of those codes could be sampled by no model (`prior sample`
    refuses the pair), so it is refused before its training."""
    checkpoint = Path(info.checkpoint) if info.checkpoint is not None else None
    if info.codebook is None or checkpoint is None or not checkpoint.is_file():
        return
    try:
        weights = load_checkpoint(checkpoint).get("model")
    except UserError:  # a damaged model: prior sample says so when it loads it
        return
    if isinstance(weights, dict) and codebook_digest(weights) != info.codebook:
        raise UserError(
            f"The codes in {codes_dir} were encoded by an earlier state of {checkpoint}, whose codebook has moved "
            "on since (it trained on), so no model could decode a prior of them; encode the data again, then "
            "train the prior on the new codes."
        )


def train_prior(exp_dir: str | Path, overrides: list[str]) -> dict[str, float]:
    """Train (or resume) a code prior in ``exp_dir``; returns the final validation metrics."""
    exp_dir = Path(exp_dir)
    cfg, merged = experiment_config(exp_dir, overrides, config_name="prior_train")
    check_prior_config(cfg)
    dist_info = init_distributed(cfg["device"])
    device = select_device(cfg["device"], dist_info.local_rank)

    codes_dir, merged = absolute_path(exp_dir, cfg, merged, overrides, "data.codes")
    manifest, merged = absolute_path(exp_dir, cfg, merged, overrides, "data.manifest")
    if codes_dir is None:
        raise UserError("data.codes is empty; pass data.codes=FOLDER (a `vqspeech encode` output folder).")
    if overlapping(exp_dir, codes_dir):
        raise UserError(
            f"The prior's folder {exp_dir} and its codes folder {codes_dir} overlap; "
            "train the prior in a folder of its own."
        )
    level = cfg["data"]["level"]
    info, utts = read_prior_data(codes_dir, manifest, level)
    top = info.top if level == "bottom" else None  # a bottom prior is conditioned on the top codes
    crop = cfg["data"]["crop_frames"]
    if top is not None and crop % top.stride:
        fixed = -(-crop // top.stride) * top.stride
        raise UserError(
            f"data.crop_frames={crop} is not a multiple of the top codes' stride "
            f"{top.stride}; set data.crop_frames={fixed} (or another multiple)."
        )
    train_utts = [u for u in utts if u.split == "train"]
    if not train_utts:
        raise UserError(f"The codes in {codes_dir} have no utterances in the train split.")
    valid_utts = [u for u in utts if u.split == "valid"]
    if info.num_codes is None:
        raise UserError(f"{codes_dir / 'codes.json'} does not say K; re-run `vqspeech encode`.")

    conditioning = None if top is None else {"num_codes": top.num_codes, "stride": top.stride}
    if info.checkpoint is not None:  # a prior inside an experiment is that model's (its report shows it)
        check_results_home(exp_dir, [info.checkpoint])
    _check_codebook_current(codes_dir, info)
    with lock_on_every_rank(exp_dir, "prior train", dist_info):
        last = exp_dir / "checkpoints" / "last.pt"
        resume = load_prior_checkpoint(last) if last.is_file() else None
        check_resumable(exp_dir, cfg, resume, model_key="prior")
        trained_on = (level, info.num_codes, conditioning, info.groups)
        if resume and (resume["level"], resume["num_codes"], resume.get("top"), resume["groups"]) != trained_on:
            raise UserError(
                f"{exp_dir} was trained on other codes (level {resume['level']}, K={resume['num_codes']}, "
                f"top {resume.get('top')}, groups {resume['groups']}); use a new folder for data.level={level} "
                f"on {codes_dir}."
            )
        saved = exp_dir / "codes.json"
        if resume and saved.is_file():
            before, now = _origins(CodesInfo.load(saved), info)
            if before != now and {k for k in now if before[k] != now[k]} == {"codebook"}:
                raise UserError(
                    f"The codes in {codes_dir} were encoded again by {now['checkpoint']} after its codebook "
                    f"changed (trained on), so they are not the codes {exp_dir} learned; train a new prior on "
                    "them in a new folder."
                )
            if before != now:
                raise UserError(
                    f"The codes in {codes_dir} were made by {now['checkpoint'] or 'no VQ-VAE'}, but "
                    f"{exp_dir} was trained on codes of {before['checkpoint'] or 'no VQ-VAE'} (see its codes.json); "
                    "train a new prior on these codes in a new folder."
                )
        speakers = resume["speakers"] if resume else sorted({str(u.speaker) for u in train_utts})
        unknown = sorted({str(u.speaker) for u in train_utts} - set(speakers))
        if unknown:
            raise UserError(
                f"The codes have training speakers ({', '.join(unknown[:5])}) that {exp_dir} was not started "
                "with; train a new prior for a changed speaker set."
            )
        torch.manual_seed(cfg["seed"])
        try:
            model = build_prior(
                cfg["prior"],
                len(speakers),
                info.num_codes,
                groups=info.groups,
                top_codes=top.num_codes if top else 0,
                top_stride=top.stride if top else 1,
            )
        except (ValueError, TypeError, KeyError, RuntimeError, ArithmeticError) as exc:
            raise UserError(f"The prior config is invalid ({first_line(exc)}); fix the prior.* values.") from None
        record = info.without_ids()
        if top is not None:
            record.level = "bottom"
        write_experiment_files(exp_dir, cfg, merged, dist_info, {"codes.json": record.to_text()})
        task = PriorTask(model, cfg, speakers, info.num_codes, train_utts, valid_utts, level=level, codes_info=record)
        extra = {"arch": cfg["prior"]["arch"], "parameters": model.num_parameters()}
        return fit_and_summarise(exp_dir, task, cfg, device, dist_info, resume, extra=extra)
