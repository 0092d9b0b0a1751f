"""What the trainer needs to know about the VQ-VAE: batches, loss, validation, media.

With ``model.decoder_type=conv`` the task also owns the waveform discriminator and its optimizer
(``train.adversarial``) and runs the adversarial step inside :meth:`VQVAETask.loss`; see there.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist

from .audio import load_audio
from .data.dataset import crop_length, crop_loader
from .data.manifest import Utterance
from .generate import generate
from .models import VQVAE
from .models.discriminators import CombinedDiscriminator
from .models.gan_losses import (adaptive_weight, discriminator_active, discriminator_loss,
                                feature_matching_loss, generator_adversarial_loss)
from .models.quantizer import perplexity


class VQVAETask:
    kind = "vqvae"
    progress_keys = ("bits", "mel", "lambda", "ppl", "used", "top_used")

    def __init__(self, model: VQVAE, config: dict[str, Any], speakers: list[str],
                 train_utts: list[Utterance], valid_utts: list[Utterance]):
        self.model, self.config, self.speakers = model, config, speakers
        self.speaker_ids = {s: i for i, s in enumerate(speakers)}
        self.train_utts = train_utts
        self.valid_utts = [u for u in valid_utts if u.speaker in self.speaker_ids]
        train = config["train"]
        self.crop_samples = crop_length(train["crop_seconds"], model.sample_rate, model.hop_length)
        self.step = 0  # generator updates so far; the trainer sets it before each loss
        self.discriminator = self.d_optimizer = None
        if model.decoder_type == "conv":
            adv = self.adversarial = train["adversarial"]
            model.mel_weight = float(adv["mel_weight"])
            self.discriminator = CombinedDiscriminator(use_mpd=adv["mpd"], use_msd=adv["msd"])
            self.d_optimizer = torch.optim.AdamW(self.discriminator.parameters(), lr=adv["d_lr"],
                                                 betas=tuple(adv["d_betas"]),
                                                 weight_decay=adv["d_weight_decay"])

    def to_device(self, device: torch.device) -> None:
        """Move the discriminator (if any) to the training device, before its state is restored."""
        if self.discriminator is not None:
            self.discriminator.to(device)

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Resume the discriminator and its optimizer; their settings come from the config."""
        if self.discriminator is None:
            return
        if "discriminator" not in ckpt or "d_optimizer" not in ckpt:
            raise ValueError("no discriminator state")
        self.discriminator.load_state_dict(ckpt["discriminator"])
        self.d_optimizer.load_state_dict(ckpt["d_optimizer"])
        adv = self.adversarial
        for group in self.d_optimizer.param_groups:
            group.update(lr=adv["d_lr"], betas=tuple(adv["d_betas"]), weight_decay=adv["d_weight_decay"])

    def batches(self, start_step: int, rank: int, device: torch.device) -> Iterator[Any]:
        train = self.config["train"]
        loader = crop_loader(self.train_utts, self.speaker_ids, batch_size=train["batch_size"],
                             crop_samples=self.crop_samples, seed=self.config["seed"],
                             start_step=start_step, rank=rank, num_workers=train["num_workers"])
        for audio, speakers, mask in loader:
            yield audio.to(device), speakers.to(device), mask.to(device)

    def loss(self, model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor | int]]:
        """Loss and detached scalars (tensors: the trainer reads them only when it logs)."""
        audio, speakers, mask = batch
        out = model(audio, speakers, mask)
        vq = out.vq
        loss, scalars = out.loss, {}
        if out.bits_per_sample is not None:
            scalars["bits"] = out.bits_per_sample
        if out.mel_loss is not None:
            scalars["mel"] = out.mel_loss.detach()
            loss = self._adversarial(model, out, scalars)
        if out.top is not None:
            scalars.update({"top_ppl": out.top.perplexity, "top_used": (out.top.usage > 0).sum(),
                            "top_commitment": out.top.commitment_loss.detach()})
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

    def _adversarial(self, model, out, scalars: dict) -> torch.Tensor:
        """Conv decoder: the discriminator step, then the generator's loss (the trainer steps it).

        Before ``adversarial.warmup_steps`` generator updates: mel + VQ loss only, the discriminator
        idle. After: (1) one discriminator step (LSGAN) on the real crops and the detached fakes;
        (2) the generator loss ``rec + lambda * adv_weight * (adv + fm_weight * fm)`` against the
        updated discriminator, ``lambda`` VQ-GAN's adaptive weight at the decoder's last layer (1
        when ``adaptive_weight`` is false). Under DDP the discriminator's gradients and lambda are
        averaged over the ranks, so every rank takes the same steps.
        """
        adv = self.adversarial
        if not discriminator_active(self.step, adv["warmup_steps"]):
            return out.loss
        disc, real, fake = self.discriminator, out.target_audio, out.waveform
        if out.mask is not None:  # padding is silence in both, so the discriminator cannot tell by it
            fake = fake * out.mask.to(fake.dtype)
        disc.train()
        d_loss = discriminator_loss(disc(real)[0], disc(fake.detach())[0])
        self.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        if dist.is_available() and dist.is_initialized():
            world = dist.get_world_size()
            for p in disc.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= world
        self.d_optimizer.step()

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
        rec = getattr(model, "module", model).mel_weight * out.mel_loss
        if adv["adaptive_weight"]:
            decoder = getattr(model, "module", model).decoder
            weight = adaptive_weight(rec, gan, decoder.last_layer, max_weight=adv["max_weight"])
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(weight)
                weight = weight / dist.get_world_size()
        else:
            weight = torch.ones((), device=rec.device)
        scalars.update({"d_loss": d_loss.detach(), "lambda": weight, "adversarial": g_adv.detach(),
                        "feature_matching": fm.detach()})
        return out.loss + weight * adv["adv_weight"] * gan

    def validate(self, model, device) -> dict[str, float]:
        limit = self.config["train"]["valid_max_utterances"]
        return teacher_forced_metrics(model, self.valid_utts[:limit], self.speaker_ids, device)

    def log_media(self, model: VQVAE, writer, step: int, device: torch.device) -> None:
        """Original, reconstruction and a conversion of one validation utterance, with spectrograms."""
        from .plots import spectrogram_figure

        utts = self.valid_utts or self.train_utts
        utt = utts[0]
        seconds = self.config["train"]["media_seconds"]
        sr, hop = model.sample_rate, model.hop_length
        audio, _ = load_audio(utt.audio, sr)
        audio = audio[: int(seconds * sr) // hop * hop]
        if len(audio) < hop:
            return
        model.eval()
        x = torch.from_numpy(audio)[None].to(device)
        with torch.no_grad():
            latents = model.quantize(x).decoder_latents.expand(2, -1, -1)
            own = self.speaker_ids[utt.speaker]
            other = (own + 1) % len(self.speakers)
            speakers = torch.tensor([own, other], device=device)
            if model.decoder_type == "conv":
                outs = model.decoder(latents, speakers)
            else:
                gen = torch.Generator(device=device).manual_seed(step)
                outs = generate(model.decoder, latents, speakers, generator=gen)
        outs = outs.cpu().numpy()
        writer.add_audio("audio/original", audio, step, sample_rate=sr)
        writer.add_audio("audio/reconstruction", outs[0], step, sample_rate=sr)
        writer.add_audio(f"audio/converted_to_{self.speakers[other]}", outs[1], step, sample_rate=sr)
        writer.add_figure("spectrogram", spectrogram_figure(
            {"original": audio, "reconstruction": outs[0],
             f"converted to {self.speakers[other]}": outs[1]}, sr), step)

    def checkpoint_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"speakers": list(self.speakers)}
        if self.discriminator is not None:  # resume-only: `export` leaves them out
            fields["discriminator"] = {k: v.detach().cpu().clone()
                                       for k, v in self.discriminator.state_dict().items()}
            fields["d_optimizer"] = self.d_optimizer.state_dict()
        return fields


@torch.no_grad()
def teacher_forced_metrics(model: VQVAE, utts: list[Utterance], speaker_ids: dict[str, int],
                           device: torch.device) -> dict[str, float]:
    """Whole-utterance reconstruction and code usage: the teacher-forced cross-entropy
    (``bits_per_sample``) for a WaveNet decoder, the unweighted multi-scale log-mel L1 of the
    decoded audio (``mel_loss``, a sample-weighted mean over utterances) for a conv decoder."""
    was_training = model.training
    model.eval()
    total_bits, total_samples = 0.0, 0
    usage = top_usage = None  # [K] counts (grouped codebooks: [G * K]); the top level's [K_top]
    for utt in utts:
        audio, _ = load_audio(utt.audio, model.sample_rate)
        audio = audio[: len(audio) // model.hop_length * model.hop_length]
        if len(audio) == 0:
            continue
        out = model(torch.from_numpy(audio)[None].to(device),
                    torch.tensor([speaker_ids[utt.speaker]], device=device))
        total_bits += float(out.bits_per_sample if out.mel_loss is None else out.mel_loss) * len(audio)
        total_samples += len(audio)
        counts = out.vq.usage.float().cpu()
        usage = counts if usage is None else usage + counts
        if out.top is not None:
            counts = out.top.usage.float().cpu()
            top_usage = counts if top_usage is None else top_usage + counts
    model.train(was_training)
    if total_samples == 0:
        return {}
    key = "bits_per_sample" if getattr(model, "decoder_type", "wavenet") == "wavenet" else "mel_loss"
    return {key: total_bits / total_samples, "perplexity": float(perplexity(usage)),
            "codes_used": int((usage > 0).sum()), "utterances": len(utts),
            "seconds": total_samples / model.sample_rate,
            **({} if top_usage is None else {"top_perplexity": float(perplexity(top_usage)),
                                             "top_codes_used": int((top_usage > 0).sum())})}


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
