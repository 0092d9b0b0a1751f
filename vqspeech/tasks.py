"""What the trainer needs to know about the VQ-VAE: batches, loss, validation, media."""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from .audio import load_audio
from .data.dataset import crop_length, crop_loader
from .data.manifest import Utterance
from .generate import generate
from .models import VQVAE
from .models.quantizer import perplexity


class VQVAETask:
    kind = "vqvae"
    progress_keys = ("bits", "ppl", "used")

    def __init__(self, model: VQVAE, config: dict[str, Any], speakers: list[str],
                 train_utts: list[Utterance], valid_utts: list[Utterance]):
        self.model, self.config, self.speakers = model, config, speakers
        self.speaker_ids = {s: i for i, s in enumerate(speakers)}
        self.train_utts = train_utts
        self.valid_utts = [u for u in valid_utts if u.speaker in self.speaker_ids]
        train = config["train"]
        self.crop_samples = crop_length(train["crop_seconds"], model.sample_rate, model.hop_length)

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
        return out.loss, {
            "bits": out.bits_per_sample,
            "commitment": vq.commitment_loss.detach(),
            "codebook": vq.codebook_loss.detach(),
            "ppl": vq.perplexity,
            "used": (vq.usage > 0).sum(),
            "dead": vq.dead_codes,
            "reseeded": vq.reseeded,
            "samples": mask.sum(),
        }

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
            vq, _ = model.quantize(x)
            own = self.speaker_ids[utt.speaker]
            other = (own + 1) % len(self.speakers)
            speakers = torch.tensor([own, other], device=device)
            gen = torch.Generator(device=device).manual_seed(step)
            outs = generate(model.decoder, vq.quantized.expand(2, -1, -1), speakers, generator=gen)
        outs = outs.cpu().numpy()
        writer.add_audio("audio/original", audio, step, sample_rate=sr)
        writer.add_audio("audio/reconstruction", outs[0], step, sample_rate=sr)
        writer.add_audio(f"audio/converted_to_{self.speakers[other]}", outs[1], step, sample_rate=sr)
        writer.add_figure("spectrogram", spectrogram_figure(
            {"original": audio, "reconstruction": outs[0],
             f"converted to {self.speakers[other]}": outs[1]}, sr), step)

    def checkpoint_fields(self) -> dict[str, Any]:
        return {"speakers": list(self.speakers)}


@torch.no_grad()
def teacher_forced_metrics(model: VQVAE, utts: list[Utterance], speaker_ids: dict[str, int],
                           device: torch.device) -> dict[str, float]:
    """Whole-utterance teacher-forced cross-entropy (bits per sample) and code usage."""
    was_training = model.training
    model.eval()
    total_bits, total_samples = 0.0, 0
    usage = None  # [K] counts (grouped codebooks: [G * K])
    for utt in utts:
        audio, _ = load_audio(utt.audio, model.sample_rate)
        audio = audio[: len(audio) // model.hop_length * model.hop_length]
        if len(audio) == 0:
            continue
        out = model(torch.from_numpy(audio)[None].to(device),
                    torch.tensor([speaker_ids[utt.speaker]], device=device))
        total_bits += float(out.bits_per_sample) * len(audio)
        total_samples += len(audio)
        counts = out.vq.usage.float().cpu()
        usage = counts if usage is None else usage + counts
    model.train(was_training)
    if total_samples == 0:
        return {}
    return {"bits_per_sample": total_bits / total_samples, "perplexity": float(perplexity(usage)),
            "codes_used": int((usage > 0).sum()), "utterances": len(utts),
            "seconds": total_samples / model.sample_rate}


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
