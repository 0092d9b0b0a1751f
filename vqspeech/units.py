"""Files in, files out for the inference verbs: encode to the codes layout, decode, convert.

Codes layout (DESIGN.md): ``<out>/codes/<id>.npy`` (int16 [T]), ``<out>/units.txt``
(``<id> c1 c2 ...``), ``<out>/codes.json`` (code_rate_hz, frame_offset_s, K, checkpoint, ...),
with ``--latents`` ``<out>/latents/<id>.npy`` (float32 [T, D]), and from a hierarchical model
``<out>/codes_top/<id>.npy`` (int16 [ceil(T / stride)]; codes.json ``top``: code_rate_hz, K, stride).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .audio import load_audio, save_wav
from .errors import UserError
from .eval.frames import load_codes
from .fileio import atomic_path, write_text_atomic
from .inference import HierarchicalCodes, InputItem, VQSpeech


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array)


def start_codes_dir(out_dir: Path, *, latents: bool, overwrite: bool, top: bool = False) -> None:
    """Make ``out_dir/codes`` (and ``latents``, ``codes_top``); refuse a folder holding codes unless
    ``overwrite``."""
    meta_path = out_dir / "codes.json"
    previous = [*(out_dir / "codes").glob("*.npy"), *(out_dir / "latents").glob("*.npy"),
                *(out_dir / "codes_top").glob("*.npy")]
    if (meta_path.exists() or previous) and not overwrite:
        raise UserError(f"{out_dir} already holds codes; pass --overwrite to replace them.")
    meta_path.unlink(missing_ok=True)  # first: an interrupted overwrite leaves no stale codes.json
    for stale in previous:  # an overwrite leaves no codes of the previous run behind
        stale.unlink()
    (out_dir / "codes").mkdir(parents=True, exist_ok=True)
    if latents:
        (out_dir / "latents").mkdir(exist_ok=True)
    if top:
        (out_dir / "codes_top").mkdir(exist_ok=True)


def save_units(out_dir: Path, utt_id: str, codes: np.ndarray | HierarchicalCodes,
               latents: np.ndarray | None = None) -> str:
    """Write ``codes/<id>.npy`` (and ``latents/<id>.npy``, ``codes_top/<id>.npy``); returns the
    ``units.txt`` line of the (bottom) codes (a grouped code frame [G] is one token ``c1-c2-...``)."""
    if isinstance(codes, HierarchicalCodes):
        _save_npy(out_dir / "codes_top" / f"{utt_id}.npy", codes.top)
        codes = codes.bottom
    _save_npy(out_dir / "codes" / f"{utt_id}.npy", codes)
    if latents is not None:
        _save_npy(out_dir / "latents" / f"{utt_id}.npy", latents)
    tokens = codes.tolist() if codes.ndim == 1 else ["-".join(map(str, row)) for row in codes.tolist()]
    return f"{utt_id} {' '.join(map(str, tokens))}\n"


def encode_items(vq: VQSpeech, items: list[InputItem], out_dir: Path, *, latents: bool = False,
                 overwrite: bool = False, progress: bool = True) -> dict:
    """Encode every item; unreadable inputs are listed in ``rejects.tsv`` and skipped."""
    meta_path = out_dir / "codes.json"
    start_codes_dir(out_dir, latents=latents, overwrite=overwrite, top=bool(vq.top_stride))
    units, rejects, speakers, splits = [], [], {}, {}
    for item in tqdm(items, desc="encode", unit="utt", disable=not progress):
        try:
            audio, sr = load_audio(item.audio)
            result = vq.encode(audio, sr, latents=latents)
        except UserError as exc:
            rejects.append((item.audio, str(exc)))
            continue
        codes, z = result if latents else (result, None)
        units.append(save_units(out_dir, item.id, codes, z))
        if item.speaker is not None:
            speakers[item.id] = item.speaker
        if item.split is not None:
            splits[item.id] = item.split
    if not units:
        raise UserError(f"None of the {len(items)} inputs could be encoded; see the first problem: "
                        f"{rejects[0][1] if rejects else 'no input'}")
    write_text_atomic(out_dir / "units.txt", "".join(units))
    write_text_atomic(out_dir / "rejects.tsv", "file\treason\n" + "".join(f"{f}\t{r}\n" for f, r in rejects))
    meta = {"code_rate_hz": vq.model.code_rate_hz, "frame_offset_s": 0.5 / vq.model.code_rate_hz,
            "K": vq.model.quantizer.num_codes, "groups": getattr(vq.model.quantizer, "num_groups", 1),
            "checkpoint": str(Path(vq.checkpoint).resolve()),
            "sample_rate": vq.sample_rate, "hop_length": vq.hop_length, "num_utterances": len(units),
            "speakers": speakers, "splits": splits}
    if vq.top_stride:
        meta["top"] = {"code_rate_hz": vq.model.code_rate_hz / vq.top_stride, "K": vq.model.top.num_codes,
                       "stride": vq.top_stride}
    write_text_atomic(meta_path, json.dumps(meta, indent=2) + "\n")
    return {"encoded": len(units), "rejected": len(rejects), "out_dir": str(out_dir)}


def _output_paths(ids: list[str], out: Path, overwrite: bool) -> list[Path]:
    """One input and a .wav ``out`` -> that file; else ``out/<id>.wav``. Refuse to overwrite."""
    if len(ids) == 1 and out.suffix.lower() == ".wav":
        paths = [out]
    elif out.suffix.lower() == ".wav":
        raise UserError(f"{len(ids)} inputs cannot go to the single file {out}; give a folder with -o.")
    else:
        paths = [out / f"{i}.wav" for i in ids]
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]} already exists ({len(existing)} output(s) would be replaced); "
                        "pass --overwrite or choose another output.")
    return paths


def _generate_to_files(vq: VQSpeech, codes: list[np.ndarray], speakers: list[str], paths: list[Path], *,
                       temperature: float, seed: int, batch_size: int) -> list[Path]:
    for name in set(speakers):
        vq.speaker_id(name)  # fail before any work on an unknown speaker
    if batch_size <= 0:
        raise UserError(f"--batch_size must be positive, not {batch_size}.")
    order = np.argsort([-len(c) for c in codes])  # similar lengths share a batch
    for start in range(0, len(order), batch_size):
        chunk = order[start: start + batch_size]
        audios = vq.decode_batch([codes[i] for i in chunk], [speakers[i] for i in chunk],
                                 temperature=temperature, seed=seed + start, progress=True)
        for i, audio in zip(chunk, audios):
            save_wav(paths[i], audio, vq.sample_rate)
    return paths


def decode_codes(vq: VQSpeech, codes_path: Path, out: Path, *, speaker: str | None, temperature: float = 1.0,
                 seed: int = 0, batch_size: int = 8, overwrite: bool = False) -> list[Path]:
    """A codes .npy file, or a folder written by ``encode``, -> wav files."""
    if codes_path.is_file():
        ids, meta = [codes_path.stem], {}
        files = [codes_path]
    elif (codes_path / "codes").is_dir():
        meta_path = codes_path / "codes.json"
        try:
            meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        except (OSError, ValueError) as exc:
            raise UserError(f"Cannot read {meta_path} ({exc}); re-run `vqspeech encode`.") from None
        files = sorted((codes_path / "codes").glob("*.npy"))
        ids = [f.stem for f in files]
        if not files:
            raise UserError(f"{codes_path}/codes holds no .npy files; run `vqspeech encode` first.")
    else:
        raise UserError(f"{codes_path} is neither a codes .npy file nor a folder written by `vqspeech encode`.")
    top_stride = (meta.get("top") or {}).get("stride", 0)
    if meta and top_stride != vq.top_stride:
        raise UserError(f"The codes in {codes_path} have {'two levels' if top_stride else 'one level'} but this "
                        f"model has {'two' if vq.top_stride else 'one'}; decode them with the model that made them.")
    if meta.get("hop_length") not in (None, vq.hop_length) or meta.get("K") not in (None, vq.model.quantizer.num_codes):
        raise UserError(f"The codes in {codes_path} were made by a model with another code rate or codebook size; "
                        "decode them with that model.")
    speakers = []
    for i in ids:
        name = speaker or meta.get("speakers", {}).get(i)
        if name is None:
            raise UserError(f"No speaker is known for {i}; pass --speaker (one of: {', '.join(vq.speakers[:10])}).")
        speakers.append(name)
    paths = _output_paths(ids, out, overwrite)
    codes = []
    groups = getattr(vq.model.quantizer, "num_groups", 1)
    for f in files:
        array = load_codes(f)
        if array.ndim != (1 if groups == 1 else 2) or array.size == 0 or (groups > 1 and array.shape[1] != groups):
            shape = "[frames]" if groups == 1 else f"[frames, {groups}]"
            raise UserError(f"Codes file {f} holds shape {array.shape}; this model expects {shape}.")
        if vq.top_stride:
            top_file = f.parent.parent / "codes_top" / f.name
            if not top_file.is_file():
                raise UserError(f"{top_file} is missing: this hierarchical model decodes from both code levels; "
                                "give the folder `vqspeech encode` wrote with it.")
            array = HierarchicalCodes(array, load_codes(top_file))
        codes.append(array)
    return _generate_to_files(vq, codes, speakers, paths, temperature=temperature, seed=seed,
                              batch_size=batch_size)


def convert_items(vq: VQSpeech, items: list[InputItem], out: Path, *, speaker: str, temperature: float = 1.0,
                  seed: int = 0, batch_size: int = 8, overwrite: bool = False) -> list[Path]:
    """Voice conversion: encode each input, decode its codes with ``speaker``'s embedding."""
    vq.speaker_id(speaker)
    paths = _output_paths([i.id for i in items], out, overwrite)
    codes = []
    for item in items:
        audio, sr = load_audio(item.audio)
        codes.append(vq.encode(audio, sr))
    return _generate_to_files(vq, codes, [speaker] * len(items), paths, temperature=temperature,
                              seed=seed, batch_size=batch_size)
