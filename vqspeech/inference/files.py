"""Files in, files out for the inference verbs: `encode` to a codes folder, `decode` and `convert`
to wav files. The codes folder itself is read and written by :mod:`vqspeech.data.codes`."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..audio import load_audio, save_wav
from ..data.codes import CodesFolder, CodesInfo, CodesWriter, Encoding, TopLevelInfo, read_codes_file
from ..data.corpora import AUDIO_EXTENSIONS, SourceUtterance, is_audio_file, sanitize_id
from ..data.manifest import check_header, read_manifest
from ..data.reference import reference_files
from ..errors import UserError
from ..fileio import (
    OWN_KINDS,
    RUN_RECORD,
    FolderLock,
    check_not_in_owned_folder,
    check_results_home,
    check_writable_parent,
    file_stamp,
    inside,
    is_experiment_folder,
    is_safe_name,
    json_digest,
    overlapping,
    read_generation_mark,
    read_json_object,
    write_generation_mark,
    write_text_atomic,
)
from .vqspeech import VQSpeech, check_temperature


def collect_inputs(path: str | Path, split: str | None = None, limit: int | None = None) -> list[SourceUtterance]:
    """A sound file, a folder (searched recursively) or a manifest (.jsonl) -> utterances with
    unique ids (and, from a manifest, their speakers and splits).

    ``split`` keeps one split of a manifest; ``limit`` keeps the first N items.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"Input {path} does not exist; give a sound file, a folder or a manifest.jsonl.")
    if not path.is_file() and not path.is_dir():
        raise UserError(
            f"Input {path} is neither a regular file nor a folder (a pipe, device or socket); give a sound "
            "file, a folder or a manifest.jsonl."
        )
    if path.is_file() and path.suffix == ".jsonl":
        utts = read_manifest(path, split)
        for u in utts:  # a line whose rate or length the file contradicts describes other audio
            if Path(u.audio).is_file():
                check_header(u)
        items = [SourceUtterance(u.id, u.audio, u.speaker, u.text, u.alignment, u.split) for u in utts]
        if not items:
            raise UserError(f"Manifest {path} has no utterances{f' in split {split}' if split else ''}.")
    elif split is not None:
        raise UserError(f"`split` applies to a manifest input, and {path} is not a .jsonl manifest.")
    elif path.is_file():
        items = [SourceUtterance(sanitize_id(path.stem), str(path))]
    else:
        files = sorted(
            p
            for p in path.rglob("*")
            if is_audio_file(p)
            and not p.is_dir()  # a pipe or device named like audio is an input that load_audio rejects
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )  # hidden files and folders (temporary files of killed runs, .git) are not inputs
        if not files:
            raise UserError(f"Folder {path} holds no sound files ({', '.join(AUDIO_EXTENSIONS)}).")
        items = [SourceUtterance(sanitize_id(str(f.relative_to(path).with_suffix(""))), str(f)) for f in files]
    seen: dict[str, str | None] = {}
    for item in items:
        if item.id in seen:
            raise UserError(f"Inputs {seen[item.id]} and {item.path} both get the id {item.id!r}; rename one of them.")
        seen[item.id] = item.path
    if limit is not None:
        if limit <= 0:
            raise UserError(f"`limit` must be positive, not {limit}.")
        items = items[:limit]
    return items


def encode_items(
    vq: VQSpeech,
    items: list[SourceUtterance],
    out_dir: Path,
    *,
    latents: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Encode every item into the codes folder ``out_dir`` (holding its lock); unreadable inputs
    are listed in ``rejects.tsv`` and skipped."""
    check_results_home(out_dir, [vq.checkpoint])
    with FolderLock(out_dir, "encode"):
        return _encode_items(vq, items, out_dir, latents=latents, overwrite=overwrite, progress=progress)


def _encode_items(
    vq: VQSpeech, items: list[SourceUtterance], out_dir: Path, *, latents: bool, overwrite: bool, progress: bool
) -> dict:
    writer = CodesWriter(out_dir, latents=latents, top=bool(vq.top_stride), overwrite=overwrite)
    rejects, speakers, splits = [], {}, {}
    for item in tqdm(items, desc="encode", unit="utt", disable=not progress):
        try:
            audio, sr = load_audio(str(item.path))
            encoding = vq.encode(audio, sr, latents=latents)
        except UserError as exc:
            rejects.append((str(item.path), str(exc)))
            continue
        writer.add(item.id, encoding)
        if item.speaker is not None:
            speakers[item.id] = item.speaker
        if item.split is not None:
            splits[item.id] = item.split
    if not writer.lines:
        raise UserError(
            f"None of the {len(items)} inputs could be encoded; see the first problem: "
            f"{rejects[0][1] if rejects else 'no input'}"
        )
    model = vq.model
    info = CodesInfo.for_rate(
        model.code_rate_hz,
        model.quantizer.num_codes,
        groups=model.quantizer.num_groups,
        checkpoint=str(Path(str(vq.checkpoint)).resolve()),
        codebook=vq.codebook_digest,
        sample_rate=vq.sample_rate,
        hop_length=vq.hop_length,
        speakers=speakers,
        splits=splits,
    )
    if model.top is not None:
        info.top = TopLevelInfo(model.code_rate_hz / model.top.stride, model.top.num_codes, model.top.stride)
    info = writer.finish(info, rejects)
    return {"encoded": info.num_utterances, "rejected": len(rejects), "out_dir": str(out_dir)}


def _interrupted_outputs(out: Path) -> dict[str, dict]:
    """Output name -> {"verb", "settings", "stamp"} of the unfinished runs recorded in ``out``: files
    that are still as the run wrote them (a file replaced since is an ordinary file; {} when there
    is no readable record)."""
    record = read_json_object(out / RUN_RECORD) if out.is_dir() else None
    outputs = record.get("outputs") if record else None
    if not isinstance(outputs, dict):
        return {}
    return {
        name: entry
        for name, entry in outputs.items()
        if isinstance(entry, dict)
        and is_safe_name(name)
        and (out / name).is_file()
        and entry.get("stamp") == file_stamp(out / name)
    }


def _output_paths(ids: list[str], out: Path, verb: str, overwrite: bool) -> list[Path]:
    """One input and a .wav ``out`` that is not a folder -> that file; else ``out/<id>.wav``. Refuse
    to overwrite, except the outputs of a killed run into the same folder (:data:`RUN_RECORD`)."""
    single = out.suffix.lower() == ".wav" and not out.is_dir()  # an existing folder is one, whatever its name
    if len(ids) == 1 and single:
        paths = [out]
    elif single:
        raise UserError(f"{len(ids)} inputs cannot go to the single file {out}; give a folder as the output.")
    else:
        paths = [inside(out, f"{i}.wav") for i in ids]
    if paths:  # before the other checks: the owner is the clearest reason (the lock checks a folder again)
        # all of them have one folder; a single file keeps out of every generated folder, its own verb's too
        check_not_in_owned_folder(paths[0], None if paths == [out] else OWN_KINDS[verb])
    interrupted = set(_interrupted_outputs(out)) if paths and paths[0] != out else set()
    _refuse_existing(paths, interrupted, overwrite)
    return paths


def _check_own_folder(out: Path, paths: list[Path], verb: str) -> None:
    """UserError when the output folder ``out`` holds files (not hidden ones) but not ``verb``'s mark
    (:data:`OWN_KINDS`): a folder of one's own recordings would otherwise have files replaced and be
    marked as generated audio, and later skipped as such by ``prepare``. (A single output file:
    nothing to check.)"""
    if paths == [out] or not out.is_dir() or (out / OWN_KINDS[verb]).exists() or is_experiment_folder(out):
        return  # (an experiment folder: the lock refuses it, saying so)
    other = sorted(e.name for e in os.scandir(out) if not e.name.startswith("."))
    if other:  # even a file named as an output: it may be a recording of the user's
        raise UserError(
            f"{out} holds {other[0]}, which `vqspeech {verb}` did not write ({len(other)} such file(s) or "
            f"folder(s)); give `{verb}` a new or empty folder of its own."
        )


def _refuse_existing(paths: list[Path], interrupted: set[str], overwrite: bool) -> None:
    """UserError when outputs exist that no killed run left (``interrupted``: their names), unless
    ``overwrite``."""
    odd = next((p for p in paths if os.path.lexists(p) and not p.is_file()), None)
    if odd is not None:
        raise UserError(
            f"{odd} is not a regular file (a folder, or a broken link?); remove it or choose another output."
        )
    existing = [p for p in paths if p.exists() and p.name not in interrupted]
    if existing and not overwrite:
        raise UserError(
            f"{existing[0]} already exists ({len(existing)} output(s) would be replaced); "
            "pass `overwrite=True` or choose another output."
        )


def _voice(vq: VQSpeech, speaker: str) -> list:
    """A voice as the run settings see it: a known speaker's name, or reference audio (a file or a
    folder) with the size and time of every sound file it holds, so a changed reference shows."""
    if speaker in vq.speakers or not os.path.exists(speaker):
        return [speaker]
    files = [os.path.realpath(f) for f in reference_files([speaker])]  # however the path is spelled
    return [os.path.realpath(speaker), [[f, file_stamp(f)] for f in files]]


def run_settings(vq: VQSpeech, verb: str, inputs: list, speakers: list, **options: object) -> str:
    """A digest of everything a decode or convert run's outputs depend on: the model (checkpoint
    file and step), the inputs (``inputs``: JSON-able descriptions), the voices and the options."""
    model = None
    if vq.checkpoint is not None and Path(vq.checkpoint).is_file():
        model = [os.path.realpath(vq.checkpoint), file_stamp(vq.checkpoint)]
    voices = {str(s): _voice(vq, str(s)) for s in speakers}
    return json_digest([verb, model, vq.step, vq.codebook_digest, inputs, [voices[str(s)] for s in speakers], options])


def _check_generation(vq: VQSpeech, speakers: list[str], temperature: float, batch_size: int, out: Path) -> None:
    """UserError before any work for an unknown speaker, an unusable reference of a voice (or one
    that overlaps the output ``out``: the outputs would become part of the voice), or an unusable
    setting."""
    for name in set(speakers):
        if name in vq.speakers and os.path.exists(name):  # the name wins; the user may have meant the recordings
            warnings.warn(
                f"{name!r} is both a speaker the model knows and a path here; the model's speaker is used (give the "
                f"path as ./{name} or in full to use its recordings).",
                stacklevel=3,
            )
        elif os.path.exists(name):
            found = [name, *(os.path.realpath(f) for f in reference_files([name]))]  # also through links
            if any(overlapping(out, f) for f in found):
                raise UserError(
                    f"The reference voice {name} overlaps the output {out}, so the outputs would become part of "
                    "the voice; keep the reference recordings apart from the output."
                )
        vq.speaker_vector(name)
    if batch_size <= 0:
        raise UserError(f"`batch_size` must be positive, not {batch_size}.")
    check_temperature(temperature)


def _check_single_output(out: Path, verb: str, overwrite: bool) -> None:
    """UserError when the single output file ``out`` would go into a folder another verb owns (a
    folder ``decode`` or ``convert`` generated included: it is written as a whole, its mark records
    what made each file), one a live run is writing, or one a killed run's rerun is to finish; or,
    without ``overwrite``, when ``out`` exists. Checked before the work and again just before the
    file takes its name (a folder run may have claimed the folder since, another run or the user
    may have written the file)."""
    check_not_in_owned_folder(out)
    FolderLock(out.parent, verb).check_free()
    if not overwrite and os.path.lexists(out):
        raise UserError(f"{out} exists (written while this run worked?); pass `overwrite=True` to replace it.")
    if os.path.lexists(out.parent / RUN_RECORD):
        raise UserError(
            f"{out.parent} holds the outputs of an unfinished `vqspeech decode` or `convert` ({RUN_RECORD}); "
            "rerun that command to finish it, or write this output elsewhere."
        )


class RunRecord:
    """The outputs a decode or convert run has written into its folder, kept in :data:`RUN_RECORD`
    until the run finishes (a single output file needs none: ``folder`` None; its folder is
    checked again instead, :func:`_check_single_output`)."""

    def __init__(self, folder: Path | None, verb: str, settings: str, overwrite: bool = False):
        self.folder, self.verb, self.settings, self.overwrite = folder, verb, settings, overwrite
        self.entries = _interrupted_outputs(folder) if folder is not None else {}

    def done(self, paths: list[Path]) -> set[Path]:
        """Those of ``paths`` a killed run with the same settings wrote."""
        return {p for p in paths if self.entries.get(p.name, {}).get("settings") == self.settings}

    def wrote(self, path: Path, written: Path) -> None:
        """Record the output ``path`` as this run's, from ``written``: the finished temporary file
        about to take its name (recorded before the rename, a kill between the two cannot leave an
        unrecorded output)."""
        if self.folder is None:
            _check_single_output(path, self.verb, self.overwrite)
            return
        self.entries[path.name] = {"verb": self.verb, "settings": self.settings, "stamp": file_stamp(written)}
        write_text_atomic(self.folder / RUN_RECORD, json.dumps({"outputs": self.entries}))

    def finish(self, paths: list[Path]) -> None:
        """The run is complete: its outputs leave the record; a killed run's others stay in it."""
        if self.folder is None:
            return
        names = {p.name for p in paths}
        rest = {n: e for n, e in _interrupted_outputs(self.folder).items() if n not in names}
        if rest:
            write_text_atomic(self.folder / RUN_RECORD, json.dumps({"outputs": rest}))
        else:
            (self.folder / RUN_RECORD).unlink(missing_ok=True)


@contextlib.contextmanager
def _writing(
    out: Path, paths: list[Path], verb: str, settings: str, overwrite: bool, made_by: dict
) -> Iterator[RunRecord]:
    """Hold the output folder's lock (one output file: check that it can be written) while the
    audio is generated, so that a bad output is found before the work. Yields the folder's
    :class:`RunRecord`: what a killed run with the same ``settings`` wrote need not be generated
    again. The outputs are checked again under the lock: a run that finished since the first
    check is no killed run. The folder's mark (:data:`OWN_KINDS`) is written before any output and
    records, once the run finishes, what made each output (``made_by``, :func:`_made_by`)."""
    if len(paths) == 1 and paths[0] == out:
        check_writable_parent(out)
        _check_single_output(out, verb, overwrite)
        yield RunRecord(None, verb, settings, overwrite)
        return
    with FolderLock(out, verb):
        if (out / RUN_RECORD).exists() and not (out / RUN_RECORD).is_file():
            raise UserError(f"{out / RUN_RECORD} is not a file (a folder?); remove it and run again.")
        _check_own_folder(out, paths, verb)  # again, under the lock
        mark = out / OWN_KINDS[verb]
        marked_here = not mark.exists()
        if marked_here:  # before any output: prepare skips the folder, other verbs keep out
            write_generation_mark(out, OWN_KINDS[verb], {})
        try:
            with _run_in(out, verb, paths, settings, overwrite) as record:
                yield record
        except BaseException:
            if marked_here and not any(not e.name.startswith(".") for e in os.scandir(out)):
                mark.unlink(missing_ok=True)  # nothing written: the folder is nobody's yet
            raise
        made = read_generation_mark(out, OWN_KINDS[verb])
        made.update({p.name: made_by for p in paths})
        write_generation_mark(out, OWN_KINDS[verb], {n: s for n, s in made.items() if (out / n).is_file()})


def _made_by(vq: VQSpeech) -> dict:
    """What a generation mark records of the model: its training step and its checkpoint's digest
    (an enrolment continued or redone changes the voice, not the step)."""
    return {"step": vq.step, "model": vq.checkpoint_digest}


@contextlib.contextmanager
def _run_in(out: Path, verb: str, paths: list[Path], settings: str, overwrite: bool) -> Iterator[RunRecord]:
    """The run record of a folder run, under its lock: a killed run's outputs with the same
    ``settings`` are reused, with other settings replaced only with ``overwrite``."""
    record = RunRecord(out, verb, settings)
    done = record.done(paths)
    replaced = [p for p in paths if p.name in record.entries and p not in done]
    if replaced and not overwrite:  # a killed run's outputs are for that run's identical rerun to finish
        killed = str(record.entries[replaced[0].name].get("verb", verb))
        raise UserError(
            f"{replaced[0]} is an output of an interrupted `vqspeech {killed}` with other settings "
            f"({len(replaced)} such output(s)); rerun that command to finish it, or pass `overwrite=True` to "
            "replace them."
        )
    _refuse_existing(paths, set(record.entries), overwrite)
    if replaced:
        warnings.warn(
            f"{out} holds {len(replaced)} output(s) of an interrupted run with other settings; this run replaces them.",
            stacklevel=3,
        )
    elif done:
        warnings.warn(
            f"{out}: carrying on an interrupted `vqspeech {verb}`, {len(done)} of {len(paths)} output(s) "
            "were already written.",
            stacklevel=3,
        )
    yield record
    record.finish(paths)


def _generate_to_files(
    vq: VQSpeech,
    encodings: list[Encoding],
    speakers: list[str],
    paths: list[Path],
    *,
    temperature: float,
    seed: int,
    batch_size: int,
    record: RunRecord,
) -> list[Path]:
    """Generate and write each output, recording it; a batch a killed run with the same settings
    wrote (:meth:`RunRecord.done`) is skipped (the batches, and so each one's random draws, are the
    same as in the run that wrote them)."""
    order = np.argsort([-len(e) for e in encodings])  # similar lengths share a batch
    done = record.done(paths)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        if all(paths[i] in done for i in chunk):
            continue
        audios = vq.decode_batch(
            [encodings[i] for i in chunk],
            [speakers[i] for i in chunk],
            temperature=temperature,
            seed=seed + start,
            progress=True,
        )
        for i, audio in zip(chunk, audios, strict=True):
            save_wav(paths[i], audio, vq.sample_rate, before_rename=functools.partial(record.wrote, paths[i]))
    return paths


def decode_codes(
    vq: VQSpeech,
    codes_path: Path,
    out: Path,
    *,
    speaker: str | None,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    overwrite: bool = False,
) -> list[Path]:
    """A codes folder, one of its ``codes/<id>.npy`` files, or a loose codes .npy file -> wav files.

    Speakers come from the folder's ``codes.json`` unless ``speaker`` is given."""
    vq.require_decoder()
    groups = vq.model.quantizer.num_groups
    folder = CodesFolder.containing(codes_path) if codes_path.is_file() else None
    if codes_path.is_file() and folder is None:  # a loose codes file
        ids, encodings = [codes_path.stem], [Encoding(read_codes_file(codes_path, vq.model.code_rate_hz))]
        _check_shape(codes_path, encodings[0].codes, groups)
        if vq.top_stride:
            raise UserError(
                f"{codes_path} holds one code level, but this hierarchical model decodes from "
                "both; give the folder `vqspeech encode` wrote with it."
            )
        warnings.warn(  # nothing says which codebook its indices are of
            f"{codes_path} carries no record of the model that made it (no codes.json); it is decoded as this "
            "model's codes, which is right only if this model made it.",
            stacklevel=2,
        )
    elif folder is not None or CodesFolder.holds_codes(codes_path):
        folder = folder or CodesFolder.open(codes_path)
        _check_folder(folder, vq)
        ids = [codes_path.stem] if codes_path.is_file() else folder.code_ids
        if not ids:
            raise UserError(f"{codes_path}/codes holds no .npy files; run `vqspeech encode` first.")
        encodings = []
        for i in ids:
            _check_shape(folder.code_path(i), folder.codes(i), groups)
            encodings.append(folder.read(i))
    else:
        raise UserError(f"{codes_path} is neither a codes .npy file nor a folder written by `vqspeech encode`.")
    speakers = []
    for i, encoding in zip(ids, encodings, strict=True):
        name = speaker or encoding.speaker
        if name is None:
            raise UserError(f"No speaker is known for {i}; pass `speaker` (one of: {', '.join(vq.speakers[:10])}).")
        speakers.append(name)
    paths = _output_paths(ids, out, "decode", overwrite)
    check_results_home(out, [vq.checkpoint])
    _check_generation(vq, speakers, temperature, batch_size, out)
    _check_own_folder(out, paths, "decode")
    inputs = [[i, hashlib.sha256(e.codes.tobytes()).hexdigest()] for i, e in zip(ids, encodings, strict=True)]
    settings = run_settings(vq, "decode", inputs, speakers, temperature=temperature, seed=seed, batch_size=batch_size)
    with _writing(out, paths, "decode", settings, overwrite, _made_by(vq)) as record:
        return _generate_to_files(
            vq, encodings, speakers, paths, temperature=temperature, seed=seed, batch_size=batch_size, record=record
        )


def _check_folder(folder: CodesFolder, vq: VQSpeech) -> None:
    """UserError unless the folder's codes were made by a model like ``vq`` (levels, rate, K) with its
    codebook (when codes.json records one)."""
    info = folder.info
    if info.checkpoint is None and info.codebook is None:  # a baseline's k-means clusters, or a stripped record
        made = f"by {info.extra['system']}" if isinstance(info.extra.get("system"), str) else "by no recorded model"
        raise UserError(
            f"The codes in {folder.root} were made {made}, not by a VQ-VAE, so no model can decode them; "
            "decode codes that `vqspeech encode` wrote."
        )
    top_stride = info.top.stride if info.top is not None else 0
    if top_stride != vq.top_stride:
        raise UserError(
            f"The codes in {folder.root} have {'two levels' if top_stride else 'one level'} but "
            f"this model has {'two' if vq.top_stride else 'one'}; decode them with the model "
            "that made them."
        )
    theirs = {
        "code rate": (info.code_rate_hz, vq.model.code_rate_hz),
        "sample rate": (info.sample_rate, vq.sample_rate),
        "hop length": (info.hop_length, vq.hop_length),
        "codebook size": (info.num_codes, vq.model.quantizer.num_codes),
    }
    for what, (there, here) in theirs.items():
        if there is not None and not math.isclose(float(there), float(here), rel_tol=1e-6):
            raise UserError(
                f"The codes in {folder.root} were made by a model with {what} {there:g}, but this model's "
                f"is {here:g}; decode them with the model that made them."
            )
    made_here = vq.checkpoint is not None and os.path.realpath(str(info.checkpoint)) == os.path.realpath(vq.checkpoint)
    if info.codebook is None and not made_here:  # an older or edited codes.json: nothing to compare
        warnings.warn(
            f"{folder.root}/codes.json records no codebook, and names {info.checkpoint} as the model that made the "
            "codes; they are decoded as this model's codes, which is right only if it shares that model's codebook.",
            stacklevel=3,
        )
    if info.codebook is not None and info.codebook != vq.codebook_digest:
        raise UserError(
            f"The codes in {folder.root} index the codebook {info.checkpoint or 'another model'} had when they were "
            "encoded, not this model's (it is another model, or it has trained on since); encode them again with "
            "this model, or decode them with the model that made them."
        )


def _check_shape(path: Path, codes: np.ndarray, groups: int) -> None:
    if codes.ndim != (1 if groups == 1 else 2) or codes.size == 0 or (groups > 1 and codes.shape[1] != groups):
        shape = "[frames]" if groups == 1 else f"[frames, {groups}]"
        raise UserError(f"Codes file {path} holds shape {codes.shape}; this model expects {shape}.")


def convert_items(
    vq: VQSpeech,
    items: list[SourceUtterance],
    out: Path,
    *,
    speaker: str,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    overwrite: bool = False,
    source: Path | None = None,
) -> list[Path]:
    """Voice conversion: encode each input, decode its codes with ``speaker``'s embedding.
    ``source``: the input as the user gave it (a folder of inputs must not overlap ``out``)."""
    vq.require_decoder()
    paths = _output_paths([i.id for i in items], out, "convert", overwrite)
    inputs = {os.path.realpath(str(i.path)) for i in items}
    clash = next((p for p in paths if os.path.realpath(p) in inputs), None)
    if clash is not None:
        raise UserError(f"{clash} is one of the inputs; write the conversions to another folder.")
    if not (len(paths) == 1 and paths[0] == out):  # a folder of outputs
        if source is not None and source.is_dir() and overlapping(out, source):
            raise UserError(f"{out} overlaps the input folder {source}; write the conversions elsewhere.")
        root = Path(os.path.realpath(out))
        held = next((i for i in sorted(inputs) if Path(i).is_relative_to(root)), None)
        if held is not None:
            raise UserError(f"{out} holds the input {held}; write the conversions to a folder apart from the inputs.")
    check_results_home(out, [vq.checkpoint])
    _check_generation(vq, [speaker], temperature, batch_size, out)
    _check_own_folder(out, paths, "convert")
    files = [str(i.path) for i in items]  # a missing one is refused as it is read, with its name
    stamps = [
        [i.id, os.path.realpath(f), file_stamp(f) if os.path.isfile(f) else None]
        for i, f in zip(items, files, strict=True)
    ]
    settings = run_settings(vq, "convert", stamps, [speaker], temperature=temperature, seed=seed, batch_size=batch_size)
    with _writing(out, paths, "convert", settings, overwrite, _made_by(vq)) as record:
        encodings = []
        for item in items:
            audio, sr = load_audio(str(item.path))
            encodings.append(vq.encode(audio, sr))
        return _generate_to_files(
            vq,
            encodings,
            [speaker] * len(items),
            paths,
            temperature=temperature,
            seed=seed,
            batch_size=batch_size,
            record=record,
        )
