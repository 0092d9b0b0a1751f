"""`vqspeech evaluate loss`: whole-utterance reconstruction loss and code usage on a manifest split
(also the VQ-VAE's validation during training)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from ..audio import resample
from ..data.manifest import (
    Utterance,
    check_not_below_rate,
    data_digest,
    load_utterance,
    manifest_file,
    read_manifest,
)
from ..errors import UserError
from ..fileio import (
    CorpusReader,
    check_not_in_owned_folder,
    check_result_kind,
    check_results_home,
    check_writable_parent,
    write_text_atomic,
)
from ..inference import VQSpeech
from ..models.conv_decoder import WaveformOutput
from ..models.cpc import CPCOutput
from ..models.mel_decoder import MelOutput
from ..models.quantizer import perplexity
from ..models.vqvae import VQVAE
from ..models.wavenet import TeacherForcedOutput

LOSS_KEYS = {
    TeacherForcedOutput: "bits_per_sample",
    WaveformOutput: "mel_loss",
    MelOutput: "mel_l1",
    CPCOutput: "cpc_loss",
}
"""The validation loss's name for each kind of reconstruction."""


@torch.no_grad()
def teacher_forced_metrics(
    model: VQVAE, utts: list[Utterance], speaker_ids: dict[str, int], device: torch.device
) -> dict[str, float]:
    """Whole-utterance reconstruction and code usage: the teacher-forced cross-entropy
    (``bits_per_sample``) for a WaveNet decoder, the unweighted multi-scale log-mel L1 of the
    decoded audio (``mel_loss``) for a conv decoder, and in the units stage of the ``mel``
    objective the L1 of its predicted log-mel frames (``mel_l1``), of the ``cpc`` objective its
    InfoNCE loss (``cpc_loss``; one utterance at a time, so the negatives are its own frames);
    each a sample-weighted mean over utterances."""
    was_training = model.training
    model.eval()
    total, total_samples, key = 0.0, 0, ""
    usage = top_usage = None  # [K] counts (grouped codebooks: [G * K]); the top level's [K_top]
    for utt in utts:
        audio = resample(load_utterance(utt), utt.sample_rate, model.sample_rate)
        audio = audio[: len(audio) // model.hop_length * model.hop_length]
        if len(audio) == 0:
            continue
        out = model(torch.from_numpy(audio)[None].to(device), torch.tensor([speaker_ids[utt.speaker]], device=device))
        rec = out.reconstruction
        key = LOSS_KEYS[type(rec)]
        total += float(rec.bits_per_sample if isinstance(rec, TeacherForcedOutput) else rec.loss) * len(audio)
        total_samples += len(audio)
        counts = out.vq.usage.float().cpu()
        usage = counts if usage is None else usage + counts
        if out.top is not None:
            counts = out.top.usage.float().cpu()
            top_usage = counts if top_usage is None else top_usage + counts
    model.train(was_training)
    if total_samples == 0 or usage is None:
        return {}
    return {
        key: total / total_samples,
        "perplexity": float(perplexity(usage)),
        "codes_used": int((usage > 0).sum()),
        "utterances": len(utts),
        "seconds": total_samples / model.sample_rate,
        **(
            {}
            if top_usage is None
            else {"top_perplexity": float(perplexity(top_usage)), "top_codes_used": int((top_usage > 0).sum())}
        ),
    }


def evaluate_loss(
    exp_dir: str | Path,
    *,
    manifest: str | Path | None = None,
    split: str = "test",
    max_utterances: int | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    device: str = "auto",
) -> dict:
    """:func:`teacher_forced_metrics` of a trained VQ-VAE on one split of ``manifest`` (default: the
    one it was trained on), over the utterances of speakers it knows; written to ``out`` (JSON)
    when given. Returns ``{"split", "manifest", **metrics}``."""
    out_path = Path(out) if out is not None else None
    if out_path is not None and out_path.suffix.lower() != ".json":
        raise UserError(f"`out` {out_path} should name a .json file.")
    if out_path is not None and out_path.exists() and not overwrite:
        raise UserError(f"{out_path} exists; pass `overwrite=True` to replace it.")
    if out_path is not None:
        check_not_in_owned_folder(out_path)  # (training's own files say so: the more precise sentence)
        check_result_kind(out_path, "loss")
    if max_utterances is not None and max_utterances <= 0:
        raise UserError(f"`max_utterances` must be positive, not {max_utterances}.")
    vq = VQSpeech.load(exp_dir, device)
    if out_path is not None:  # in this order: a refused output leaves no folder behind
        check_not_in_owned_folder(out_path)
        check_results_home(out_path, [vq.checkpoint])
        check_writable_parent(out_path)
    manifest = manifest or vq.config["data"]["manifest"]
    with CorpusReader(manifest, "evaluate loss"):
        listed = read_manifest(manifest, split)
        utts = [u for u in listed if u.speaker in vq.voiced_speakers]
        check_not_below_rate(utts, vq.sample_rate, manifest)
        if not utts:
            raise UserError(f"Manifest {manifest} has no {split} utterances of speakers this model speaks.")
        unknown = sorted({u.speaker for u in listed} - set(vq.speakers))
        untrained = sorted({u.speaker for u in listed} & vq.untrained_speakers)
        if unknown or untrained:  # the decoder has no embedding for them, or one it never trained
            why = []
            if unknown:
                why.append(
                    f"the model does not know their speakers ({', '.join(unknown[:5])}"
                    f"{', ...' if len(unknown) > 5 else ''})"
                )
            if untrained:
                why.append(f"its decoder never trained on their speakers ({', '.join(untrained[:5])})")
            warnings.warn(
                f"{len(listed) - len(utts)} of the {len(listed)} {split} utterances are left out: {'; '.join(why)}.",
                stacklevel=2,
            )
        metrics = {
            "result": "loss",
            "split": split,
            "manifest": str(manifest_file(manifest).resolve()),
            "manifest_digest": data_digest(manifest),  # the report compares it with the experiment's
            "step": vq.step,  # the state of the model measured (the report compares it with training's)
            "model_digest": vq.checkpoint_digest,
            "utterances_of_unknown_speakers": sum(u.speaker not in vq.speakers for u in listed),
            "utterances_of_untrained_speakers": sum(u.speaker in vq.untrained_speakers for u in listed),
            **teacher_forced_metrics(vq.model, utts[:max_utterances], vq.speaker_ids, vq.device),
        }
        if out_path is not None:
            write_text_atomic(out_path, json.dumps(metrics, indent=2) + "\n")
        return metrics
