"""`vqspeech train`: the VQ-VAE's training task (batches, loss, validation, media) and the
function that binds the composed config to data, model, task and trainer.

The stage (:func:`vqspeech.config.training_stage`) says what is trained: ``joint`` (the paper's
end-to-end VQ-VAE), ``units`` (``model.objective=mel`` or ``cpc``: encoder, quantizer and the objective's head) or
``decoder`` (``train.units_from``: the waveform decoder on the frozen codes of another experiment,
whose encoder, quantizer and head are copied in and never change).

With ``model.decoder_type=conv`` the task also owns the waveform discriminator and its optimizer
(``train.adversarial``) and runs the adversarial step inside :meth:`VQVAETask.loss`; see there.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

from ..audio import resample
from ..checkpoint import load_checkpoint, resolve_checkpoint
from ..config import config_changes, experiment_config, training_stage
from ..data.dataset import References, crop_length, crop_loader
from ..data.manifest import Utterance, audio_stamp, check_header, load_utterance, read_manifest, speakers_of
from ..device import init_distributed, select_device
from ..errors import UserError, first_line
from ..eval.loss import teacher_forced_metrics
from ..fileio import CorpusReader, FolderLock
from ..inference.generate import generate
from ..models.conv_decoder import ConvDecoder, WaveformOutput
from ..models.cpc import CPCOutput
from ..models.discriminators import CombinedDiscriminator
from ..models.gan_losses import (
    adaptive_weight,
    discriminator_active,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from ..models.mel_decoder import MelOutput
from ..models.vqvae import VQVAE, VQVAEOutput
from ..plots import spectrogram_figure
from .experiment import (
    absolute_path,
    check_resumable,
    fit_and_summarise,
    known_speakers_only,
    lock_on_every_rank,
    seed_everything,
    write_experiment_files,
)
from .schema import check_vqvae_config
from .trainer import Task, data_record


class VQVAETask(Task):
    kind = "vqvae"
    progress_keys = ("bits", "mel", "mel_l1", "cpc", "cpc_acc", "lambda", "ppl", "used", "top_used", "adv_acc")
    model: VQVAE

    def __init__(
        self,
        model: VQVAE,
        config: dict[str, Any],
        speakers: list[str],
        train_utts: list[Utterance],
        valid_utts: list[Utterance],
    ):
        self.model, self.config, self.speakers = model, config, speakers
        self.speaker_ids = {s: i for i, s in enumerate(speakers)}
        self.train_utts = train_utts
        self.valid_utts = known_speakers_only(valid_utts, self.speaker_ids)
        heard = {u.speaker for u in train_utts}  # a decoder stage may train on fewer speakers than its units
        self.untrained_speakers = [s for s in speakers if s not in heard] if model.stage == "decoder" else []
        train = config["train"]
        self.crop_samples = crop_length(train["crop_seconds"], model.sample_rate, model.hop_length)
        self.discriminator: CombinedDiscriminator | None = None
        self.d_optimizer: torch.optim.Optimizer | None = None
        if model.decoder_type == "conv" and model.stage != "units":
            adv = self.adversarial = train["adversarial"]
            self.mel_weight = float(adv["mel_weight"])
            self.discriminator = CombinedDiscriminator(use_mpd=adv["mpd"], use_msd=adv["msd"])
            self.d_optimizer = torch.optim.AdamW(
                self.discriminator.parameters(),
                lr=adv["d_lr"],
                betas=tuple(adv["d_betas"]),
                weight_decay=adv["d_weight_decay"],
            )

    def to_device(self, device: torch.device) -> None:
        """Move the discriminator (if any) to the training device, before its state is restored."""
        if self.discriminator is not None:
            self.discriminator.to(device)

    def _adversary(self) -> tuple[CombinedDiscriminator, torch.optim.Optimizer]:
        """The discriminator and its optimizer (a conv decoder's task has both)."""
        if self.discriminator is None or self.d_optimizer is None:
            raise RuntimeError("this task has no discriminator (model.decoder_type is not conv)")
        return self.discriminator, self.d_optimizer

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Resume the discriminator and its optimizer; their settings come from the config."""
        if self.discriminator is None:
            return
        if "discriminator" not in ckpt or "d_optimizer" not in ckpt:
            raise ValueError("no discriminator state")
        disc, d_optimizer = self._adversary()
        disc.load_state_dict(ckpt["discriminator"])
        d_optimizer.load_state_dict(ckpt["d_optimizer"])
        adv = self.adversarial
        for group in d_optimizer.param_groups:
            group.update(lr=adv["d_lr"], betas=tuple(adv["d_betas"]), weight_decay=adv["d_weight_decay"])

    def batches(self, start_step: int, rank: int, device: torch.device) -> Iterator[Any]:
        train = self.config["train"]
        loader = crop_loader(
            self.train_utts,
            self.speaker_ids,
            batch_size=train["batch_size"],
            crop_samples=self.crop_samples,
            seed=self.config["seed"],
            start_step=start_step,
            rank=rank,
            num_workers=train["num_workers"],
            speakers_per_batch=train["speakers_per_batch"],
            references=self.references,
        )
        for batch in loader:
            yield tuple(part.to(device) for part in batch)

    @property
    def references(self) -> References | None:
        """Reference crops for the speaker encoder, when there is one and the waveform decoder trains."""
        encoder_cfg = self.config["model"]["speaker_encoder"]
        if self.model.speaker_encoder is None or self.model.stage == "units":
            return None
        seconds = encoder_cfg["reference_seconds"]
        return References(crop_length(seconds, self.model.sample_rate, self.model.hop_length), encoder_cfg["share"])

    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor | int]]:
        """Loss and detached scalars (tensors: the trainer reads them only when it logs)."""
        audio, speakers, mask, *reference = batch  # reference, its mask, used (with a speaker encoder)
        out: VQVAEOutput = model(audio, speakers, mask, *reference)
        vq, rec = out.vq, out.reconstruction
        loss, scalars = out.loss, {}
        if isinstance(rec, WaveformOutput):
            scalars["mel"] = rec.loss.detach()
            loss = self._adversarial(model, out, rec, scalars)
        elif isinstance(rec, MelOutput):
            scalars["mel_l1"] = rec.loss.detach()
        elif isinstance(rec, CPCOutput):
            scalars.update({"cpc": rec.loss.detach(), "cpc_acc": rec.accuracy})
        else:
            scalars["bits"] = rec.bits_per_sample
        if out.adversary is not None:
            scalars.update({"adv_loss": out.adversary.loss.detach(), "adv_acc": out.adversary.accuracy})
        if out.top is not None:
            scalars.update(
                {
                    "top_ppl": out.top.perplexity,
                    "top_used": (out.top.usage > 0).sum(),
                    "top_commitment": out.top.commitment_loss.detach(),
                }
            )
        return loss, {
            **scalars,
            "commitment": vq.commitment_loss.detach(),
            "codebook": vq.codebook_loss.detach(),
            "ppl": vq.perplexity,
            "used": (vq.usage > 0).sum(),
            "dead": vq.dead_codes,
            "reseeded": vq.reseeded,
            "samples": mask.sum(),
        }

    def _adversarial(
        self, model: torch.nn.Module, out: VQVAEOutput, rec: WaveformOutput, scalars: dict
    ) -> torch.Tensor:
        """Conv decoder: the discriminator step, then the generator's loss (the trainer steps it).

        Before ``adversarial.warmup_steps`` generator updates: ``mel_weight`` * mel + VQ loss only,
        the discriminator idle. After: (1) one discriminator step (LSGAN) on the real crops and the
        detached fakes;
        (2) the generator loss ``rec + lambda * adv_weight * (adv + fm_weight * fm)`` against the
        updated discriminator, ``lambda`` VQ-GAN's adaptive weight at the decoder's last layer (1
        when ``adaptive_weight`` is false). Under DDP the discriminator's gradients and lambda are
        averaged over the ranks, so every rank takes the same steps.
        """
        adv = self.adversarial
        loss = self.mel_weight * rec.loss + out.quantizer_loss
        if not discriminator_active(self.step, adv["warmup_steps"]):
            return loss
        disc, d_optimizer = self._adversary()
        real, fake = rec.target, rec.waveform
        if rec.mask is not None:  # padding is silence in both, so the discriminator cannot tell by it
            fake = fake * rec.mask.to(fake.dtype)
        disc.train()
        d_loss = discriminator_loss(disc(real)[0], disc(fake.detach())[0])
        d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        if dist.is_available() and dist.is_initialized():
            world = dist.get_world_size()
            for p in disc.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= world
        d_optimizer.step()

        disc.requires_grad_(False)  # the generator's backward needs no discriminator gradients
        try:
            with torch.no_grad():
                _, real_features = disc(real)
            fake_logits, fake_features = disc(fake)
        finally:
            disc.requires_grad_(True)
        g_adv = generator_adversarial_loss(fake_logits)
        fm = feature_matching_loss(real_features, fake_features)
        gan = g_adv + adv["fm_weight"] * fm
        weighted_mel = self.mel_weight * rec.loss
        if adv["adaptive_weight"]:
            decoder = getattr(model, "module", model).decoder
            if not isinstance(decoder, ConvDecoder):
                raise TypeError("the adversarial step needs a conv decoder")
            weight = adaptive_weight(weighted_mel, gan, decoder.last_layer, max_weight=adv["max_weight"])
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(weight)
                weight = weight / dist.get_world_size()
        else:
            weight = torch.ones((), device=weighted_mel.device)
        scalars.update(
            {
                "d_loss": d_loss.detach(),
                "lambda": weight,
                "adversarial": g_adv.detach(),
                "feature_matching": fm.detach(),
            }
        )
        return loss + weight * adv["adv_weight"] * gan

    def validate(self, model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        if not isinstance(model, VQVAE):
            raise TypeError(f"VQVAETask validates a VQVAE, not a {type(model).__name__}")
        limit = self.config["train"]["valid_max_utterances"]
        return teacher_forced_metrics(model, self.valid_utts[:limit], self.speaker_ids, device)

    def log_media(self, model: torch.nn.Module, writer: SummaryWriter, step: int, device: torch.device) -> None:
        """Original, reconstruction and a conversion of one validation utterance, with spectrograms.
        Nothing in the units stage: its waveform decoder is not trained yet."""
        if self.model.stage == "units":
            return
        utts = self.valid_utts or self.train_utts
        utt = utts[0]
        seconds = self.config["train"]["media_seconds"]
        sr, hop = self.model.sample_rate, self.model.hop_length
        audio = resample(load_utterance(utt), utt.sample_rate, sr)
        audio = audio[: int(seconds * sr) // hop * hop]
        if len(audio) < hop:
            return
        model.eval()
        x = torch.from_numpy(audio)[None].to(device)
        with torch.no_grad():
            latents = self.model.quantize(x).decoder_input.expand(2, -1, -1)
            own = self.speaker_ids[utt.speaker]
            other = (own + 1) % len(self.speakers)
            speakers = torch.tensor([own, other], device=device)
            decoder = self.model.decoder
            if isinstance(decoder, ConvDecoder):  # model.decoder_type conv
                outs = decoder(latents, speakers)
            else:
                gen = torch.Generator(device=device).manual_seed(step)
                outs = generate(decoder, latents, speakers, generator=gen)
        waves = outs.cpu().numpy()
        writer.add_audio("audio/original", audio, step, sample_rate=sr)
        writer.add_audio("audio/reconstruction", waves[0], step, sample_rate=sr)
        writer.add_audio(f"audio/converted_to_{self.speakers[other]}", waves[1], step, sample_rate=sr)
        writer.add_figure(
            "spectrogram",
            spectrogram_figure(
                {"original": audio, "reconstruction": waves[0], f"converted to {self.speakers[other]}": waves[1]}, sr
            ),
            step,
        )

    def data_record(self) -> dict[str, Any]:
        return data_record(  # with each audio file's stamp: other audio of the same length is other data
            [(u.id, u.speaker, u.num_samples, audio_stamp(u)) for u in self.train_utts],
            [(u.id, u.speaker, u.num_samples, audio_stamp(u)) for u in self.valid_utts],
        )

    def checkpoint_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"speakers": list(self.speakers)}
        if self.untrained_speakers:  # rows of the speaker table the waveform decoder never trained
            fields["untrained_speakers"] = list(self.untrained_speakers)
        if self.discriminator is not None and self.d_optimizer is not None:  # resume only
            fields["discriminator"] = {k: v.detach().cpu().clone() for k, v in self.discriminator.state_dict().items()}
            fields["d_optimizer"] = self.d_optimizer.state_dict()
        return fields


def build_model(model_cfg: dict[str, Any], num_speakers: int) -> VQVAE:
    """VQVAE.from_config, with a bad model value reported as one sentence."""
    try:
        return VQVAE.from_config(model_cfg, num_speakers)
    except (ValueError, TypeError, KeyError, RuntimeError, ArithmeticError) as exc:  # the schema missed a case
        raise UserError(f"The model config is invalid ({first_line(exc)}); fix the model.* values.") from None


def train_vqvae(exp_dir: str | Path, overrides: list[str]) -> dict[str, float]:
    """Train (or resume) a VQ-VAE in ``exp_dir``; returns the final validation metrics."""
    exp_dir = Path(exp_dir)
    cfg, merged = experiment_config(exp_dir, overrides)
    check_vqvae_config(cfg)
    dist_info = init_distributed(cfg["device"])
    device = select_device(cfg["device"], dist_info.local_rank)
    model_cfg = cfg["model"]

    manifest, merged = absolute_path(exp_dir, cfg, merged, overrides, "data.manifest")
    if manifest is None:
        raise UserError("data.manifest is empty; pass data.manifest=PATH (the manifest.jsonl of `vqspeech prepare`).")
    units_from, merged = absolute_path(exp_dir, cfg, merged, overrides, "train.units_from")
    with CorpusReader(manifest, "train"):
        stage = training_stage(cfg)
        utts = read_manifest(manifest)
        rates = sorted({u.sample_rate for u in utts})
        if rates != [model_cfg["sample_rate"]]:
            raise UserError(
                f"Manifest {manifest} holds audio at {', '.join(map(str, rates))} Hz but the model "
                f"runs at {model_cfg['sample_rate']} Hz; re-run `vqspeech prepare --sample_rate "
                f"{model_cfg['sample_rate']}` or set model.sample_rate."
            )
        train_utts = [u for u in utts if u.split == "train"]
        if not train_utts:
            raise UserError(f"Manifest {manifest} has no utterances in the train split.")
        valid_utts = [u for u in utts if u.split == "valid"]
        missing = [u.audio for u in (*train_utts, *valid_utts) if not Path(u.audio).is_file()]
        if missing:  # found now, not when a crop or the last validation first reads it
            raise UserError(
                f"{missing[0]} listed in {manifest} does not exist ({len(missing)} missing file(s)); "
                "re-run `vqspeech prepare` or fix the manifest."
            )
        for utt in (*train_utts, *valid_utts):  # rate and length from the headers, before the first step
            check_header(utt)

        with lock_on_every_rank(exp_dir, "train", dist_info):
            last = exp_dir / "checkpoints" / "last.pt"
            resume = load_checkpoint(last) if last.is_file() else None
            check_resumable(exp_dir, cfg, resume)
            trained_on = (resume["config"].get("train") or {}).get("units_from") if resume is not None else None
            if resume is not None and trained_on != cfg["train"]["units_from"]:
                raise UserError(
                    f"{exp_dir} was trained on the units of {resume['config']['train'].get('units_from')}, not "
                    f"{cfg['train']['units_from']}; a decoder stays with its units: train a new experiment."
                )
            units = None
            if resume is None and units_from is not None:
                units = units_checkpoint(units_from, model_cfg)
            speakers = resume["speakers"] if resume else units["speakers"] if units else speakers_of(train_utts)
            unknown = sorted({u.speaker for u in train_utts} - set(speakers))
            if unknown:
                where = f"{exp_dir} was not started with" if resume else f"the units of {units_from} do not know"
                raise UserError(
                    f"The manifest has training speakers ({', '.join(unknown[:5])}) that {where}; "
                    "train a new experiment for a changed speaker set."
                )
            seed_everything(cfg["seed"])
            model = build_model(model_cfg, len(speakers))
            if units is not None:
                copy_units(model, units)
            model.set_stage(stage)
            speaker_list = "".join(f"{s}\n" for s in speakers)
            write_experiment_files(exp_dir, cfg, merged, dist_info, {"speakers.txt": speaker_list})
            task = VQVAETask(model, cfg, speakers, train_utts, valid_utts)
            if task.untrained_speakers and dist_info.rank == 0:
                warnings.warn(
                    f"The waveform decoder trains on {len(speakers) - len(task.untrained_speakers)} of the "
                    f"{len(speakers)} speakers its units know; without training utterances here, the voices of "
                    f"{', '.join(task.untrained_speakers[:5])} stay unlearned and are refused as targets.",
                    stacklevel=1,
                )
            parameters = sum(p.numel() for p in model.parameters())
            return fit_and_summarise(exp_dir, task, cfg, device, dist_info, resume, extra={"parameters": parameters})


UNIT_CONFIG_KEYS = (
    "sample_rate",
    "hop_length",
    "num_codes",
    "latent_dim",
    "objective",
    "encoder",
    "quantizer",
    "top",
    "speaker_adversary",
)
"""The model config keys that make the codes: a decoder trained on frozen units must share them."""

UNIT_PREFIXES = ("encoder.", "quantizer.", "top.", "units_head.", "speaker_adversary.")
"""The state-dict entries of the modules that make the codes (and the objective's head)."""


def units_checkpoint(source: Path, model_cfg: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint of the experiment (or checkpoint file) ``source`` whose units a decoder
    stage keeps frozen; UserError unless it is a VQ-VAE with the same unit config."""
    path = resolve_checkpoint(source)
    if path.name == "last.pt" and path.parent.name == "checkpoints":  # not one a training still rewrites
        try:
            FolderLock(path.parent.parent, "train").check_free()
        except UserError as exc:
            raise UserError(
                f"The units of train.units_from={source} are still changing: {exc} Or give one of its "
                "checkpoints/step-N.pt."
            ) from None
    ckpt = load_checkpoint(path)
    if ckpt.get("kind") != "vqvae":
        raise UserError(f"train.units_from={source} holds a {ckpt.get('kind')} model, not a VQ-VAE.")
    theirs = ckpt["config"]["model"]
    for key in UNIT_CONFIG_KEYS:
        changes = config_changes(theirs.get(key), model_cfg[key], f"model.{key}")
        if changes:
            raise UserError(
                f"The units in {path} were trained with other model values (there -> here: "
                f"{', '.join(changes[:3])}); train the decoder with the same model.* values as its units."
            )
    return ckpt


def copy_units(model: VQVAE, ckpt: dict[str, Any]) -> None:
    """Load the encoder, quantizer, top level and objective head of ``ckpt`` into ``model``."""
    state = {k: v for k, v in ckpt["model"].items() if k.startswith(UNIT_PREFIXES)}
    own = {k for k in model.state_dict() if k.startswith(UNIT_PREFIXES)}
    try:
        if set(state) != own:
            raise RuntimeError(f"{len(set(state) ^ own)} unit weights differ in name")
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise UserError(
            f"The units of train.units_from do not fit this model ({first_line(exc)[:100]}); "
            "train the decoder with the same model.* values as its units."
        ) from None
