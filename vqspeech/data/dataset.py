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
    reference: tuple[int, int, bool] | None = None  # (utterance, offset, used): a reference crop


@dataclass
class References:
    """Reference crops for a speaker encoder: one per training crop, from another utterance of the
    same speaker where it has one (else another place in the same utterance), used for a ``share``
    of the crops."""

    samples: int  # the reference crop's length
    share: float  # fraction of crops whose decoder is conditioned on their reference


class CropDataset(Dataset):
    """Reads one crop: CropRequest -> (audio [L] float32, speaker id, mask [L] float32), and for a
    request with a reference also (reference [R], reference mask [R], used: bool).

    Utterances shorter than the crop are zero-padded at the end; the mask marks real samples.
    """

    def __init__(
        self, utts: list[Utterance], speaker_ids: dict[str, int], crop_samples: int, reference_samples: int = 0
    ):
        self.utts, self.speaker_ids, self.crop_samples = utts, speaker_ids, crop_samples
        self.reference_samples = reference_samples

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, request: CropRequest):
        utt = self.utts[request.utterance]
        audio, mask = self.read(utt, request.offset, self.crop_samples)
        if request.reference is None:
            return audio, self.speaker_ids[utt.speaker], mask
        index, offset, used = request.reference
        reference, reference_mask = self.read(self.utts[index], offset, self.reference_samples)
        return audio, self.speaker_ids[utt.speaker], mask, reference, reference_mask, used

    def read(self, utt: Utterance, offset: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``length`` samples of ``utt`` from ``offset``, zero-padded: (audio [length], mask [length])."""
        try:
            audio, rate = sf.read(sound_file(utt.audio), start=offset, frames=length, dtype="float32", always_2d=True)
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
        expected = min(length, utt.num_samples - offset)
        if len(audio) < expected - rate // 100:  # shorter than the manifest says (10 ms of slack)
            raise UserError(
                f"{utt.audio} is shorter than its manifest line ({utt.id}) says ({utt.duration:g} s); "
                "re-run `vqspeech prepare` to rebuild the manifest."
            )
        if not np.all(np.isfinite(audio)):
            raise UserError(f"{utt.audio} ({utt.id}) has NaN or infinite samples; it cannot be used as audio.")
        mask = np.zeros(length, dtype=np.float32)
        mask[: len(audio)] = 1.0
        audio = np.pad(audio, (0, length - len(audio)))
        return torch.from_numpy(audio), torch.from_numpy(mask)


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
        references: References | None = None,
    ):
        lengths = np.array([u.num_samples for u in utts], dtype=np.float64)
        self.references = references
        self.lengths = lengths.astype(np.int64)
        self.weights = lengths / lengths.sum()
        self.batch_size, self.crop_samples = batch_size, crop_samples
        self.seed, self.start_step, self.rank = seed, start_step, rank
        self.speakers_per_batch = speakers_per_batch
        if speakers_per_batch and batch_size % speakers_per_batch:
            raise ValueError(f"speakers_per_batch={speakers_per_batch} does not divide batch_size={batch_size}")
        speakers = sorted({u.speaker for u in utts})
        self.by_speaker = [np.array([i for i, u in enumerate(utts) if u.speaker == s]) for s in speakers]
        index_of = {s: i for i, s in enumerate(speakers)}
        self.speaker_of = np.array([index_of[u.speaker] for u in utts])  # utterance -> its by_speaker entry
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
        requests = [CropRequest(int(i), int(o)) for i, o in zip(picks, offsets, strict=True)]
        if self.references is not None:  # drawn after the crops: the crops stay those of a run without
            for request in requests:
                request.reference = self._reference(rng, request.utterance, request.offset)
        return requests

    def _reference(self, rng: np.random.Generator, utterance: int, offset: int) -> tuple[int, int, bool]:
        """Another utterance of ``utterance``'s speaker, at a uniform offset; for a speaker with one
        utterance, a segment of it that does not overlap the crop at ``offset`` where the utterance
        is long enough (else anywhere in it). And whether the crop is conditioned on it."""
        assert self.references is not None
        length = self.references.samples
        pool = self.by_speaker[self.speaker_of[utterance]]
        others = pool[pool != utterance]
        use = bool(rng.random() < self.references.share)
        if len(others):
            index = int(rng.choice(others))
            return index, int(rng.integers(0, max(int(self.lengths[index]) - length, 0) + 1)), use
        total = int(self.lengths[utterance])
        before = max(offset - length + 1, 0)  # starts in [0, offset - length] end before the crop
        after = max(total - length - (offset + self.crop_samples) + 1, 0)  # starts after it
        if before + after == 0:
            return utterance, int(rng.integers(0, max(total - length, 0) + 1)), use
        pick = int(rng.integers(0, before + after))
        return utterance, pick if pick < before else offset + self.crop_samples + pick - before, use

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
    references: References | None = None,
) -> DataLoader:
    """An endless DataLoader of (audio [B, L], speakers [B], mask [B, L]) starting at ``start_step``
    (batches as :class:`StepBatchSampler` draws them); with ``references`` each batch also holds
    (reference [B, R], reference mask [B, R], used [B] bool)."""
    sampler = StepBatchSampler(utts, batch_size, crop_samples, seed, start_step, rank, speakers_per_batch, references)
    # an own generator: the loader's worker seed must not consume the global RNG, or a resumed
    # run's random stream would differ from an uninterrupted one
    return DataLoader(
        CropDataset(utts, speaker_ids, crop_samples, references.samples if references else 0),
        batch_sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
