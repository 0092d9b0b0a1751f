"""Training batches: random fixed-length crops drawn as a pure function of (seed, step, rank).

Because a batch depends only on its step number, resuming at step s replays exactly the data an
uninterrupted run would have seen, whatever the number of loader workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..audio import sound_file
from ..errors import UserError
from .manifest import Utterance


def crop_length(seconds: float, sample_rate: int, hop_length: int) -> int:
    """Crop length in samples: ``seconds`` rounded down to whole code frames, at least one frame."""
    return max(hop_length, int(seconds * sample_rate) // hop_length * hop_length)


@dataclass
class CropRequest:
    utterance: int
    offset: int


class CropDataset(Dataset):
    """Reads one crop: CropRequest -> (audio [L] float32, speaker id, mask [L] float32).

    Utterances shorter than the crop are zero-padded at the end; the mask marks real samples.
    """

    def __init__(self, utts: list[Utterance], speaker_ids: dict[str, int], crop_samples: int):
        self.utts, self.speaker_ids, self.crop_samples = utts, speaker_ids, crop_samples

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, request: CropRequest):
        utt = self.utts[request.utterance]
        try:
            audio, rate = sf.read(
                sound_file(utt.audio), start=request.offset, frames=self.crop_samples, dtype="float32", always_2d=True
            )
        except Exception as exc:
            raise UserError(
                f"Cannot read {utt.audio} listed in the manifest ({exc}); re-run `vqspeech prepare`."
            ) from None
        if rate != utt.sample_rate:
            raise UserError(
                f"{utt.audio} holds audio at {rate} Hz but its manifest line ({utt.id}) says "
                f"{utt.sample_rate} Hz; re-run `vqspeech prepare` to rebuild the manifest."
            )
        audio = audio[:, 0]
        expected = min(self.crop_samples, utt.num_samples - request.offset)
        if len(audio) < expected - rate // 100:  # shorter than the manifest says (10 ms of slack)
            raise UserError(
                f"{utt.audio} is shorter than its manifest line ({utt.id}) says ({utt.duration:g} s); "
                "re-run `vqspeech prepare` to rebuild the manifest."
            )
        if not np.all(np.isfinite(audio)):
            raise UserError(f"{utt.audio} ({utt.id}) has NaN or infinite samples; it cannot be used as audio.")
        mask = np.zeros(self.crop_samples, dtype=np.float32)
        mask[: len(audio)] = 1.0
        audio = np.pad(audio, (0, self.crop_samples - len(audio)))
        return torch.from_numpy(audio), self.speaker_ids[utt.speaker], torch.from_numpy(mask)


class StepBatchSampler(Sampler):
    """Infinite batches of CropRequests; batch s is drawn from rng(seed, s, rank).

    Utterances are drawn with probability proportional to their length (every sample equally
    likely), crop offsets uniformly. With ``speakers_per_batch`` n > 0 a batch holds n different
    speakers (drawn by their share of the audio; with replacement when there are fewer) and
    ``batch_size / n`` crops of each, from different utterances of that speaker where it has enough.
    """

    def __init__(
        self,
        utts: list[Utterance],
        batch_size: int,
        crop_samples: int,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        speakers_per_batch: int = 0,
    ):
        lengths = np.array([u.num_samples for u in utts], dtype=np.float64)
        self.lengths = lengths.astype(np.int64)
        self.weights = lengths / lengths.sum()
        self.batch_size, self.crop_samples = batch_size, crop_samples
        self.seed, self.start_step, self.rank = seed, start_step, rank
        self.speakers_per_batch = speakers_per_batch
        if speakers_per_batch and batch_size % speakers_per_batch:
            raise ValueError(f"speakers_per_batch={speakers_per_batch} does not divide batch_size={batch_size}")
        speakers = sorted({u.speaker for u in utts})
        self.by_speaker = [np.array([i for i, u in enumerate(utts) if u.speaker == s]) for s in speakers]
        shares = np.array([lengths[i].sum() for i in self.by_speaker])
        self.speaker_weights = shares / shares.sum()

    def _utterances(self, rng: np.random.Generator) -> np.ndarray:
        if not self.speakers_per_batch:
            return rng.choice(len(self.weights), size=self.batch_size, p=self.weights)
        count = len(self.by_speaker)
        chosen = rng.choice(
            count, size=self.speakers_per_batch, replace=count < self.speakers_per_batch, p=self.speaker_weights
        )
        per_speaker = self.batch_size // self.speakers_per_batch
        picks = []
        for speaker in chosen:
            pool = self.by_speaker[speaker]
            p = self.weights[pool] / self.weights[pool].sum()
            picks.append(rng.choice(pool, size=per_speaker, replace=len(pool) < per_speaker, p=p))
        return np.concatenate(picks)

    def batch(self, step: int) -> list[CropRequest]:
        rng = np.random.default_rng([self.seed, step, self.rank])
        picks = self._utterances(rng)
        slack = np.maximum(self.lengths[picks] - self.crop_samples, 0)
        offsets = (rng.random(self.batch_size) * (slack + 1)).astype(np.int64)
        return [CropRequest(int(i), int(o)) for i, o in zip(picks, offsets, strict=True)]

    def __iter__(self):
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


def crop_loader(
    utts: list[Utterance],
    speaker_ids: dict[str, int],
    *,
    batch_size: int,
    crop_samples: int,
    seed: int,
    start_step: int,
    rank: int = 0,
    num_workers: int = 0,
    speakers_per_batch: int = 0,
) -> DataLoader:
    """An endless DataLoader of (audio [B, L], speakers [B], mask [B, L]) starting at ``start_step``
    (batches as :class:`StepBatchSampler` draws them)."""
    sampler = StepBatchSampler(utts, batch_size, crop_samples, seed, start_step, rank, speakers_per_batch)
    # an own generator: the loader's worker seed must not consume the global RNG, or a resumed
    # run's random stream would differ from an uninterrupted one
    return DataLoader(
        CropDataset(utts, speaker_ids, crop_samples),
        batch_sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
