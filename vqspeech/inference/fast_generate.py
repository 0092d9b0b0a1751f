"""Fast WaveNet generation on the CPU: the per-sample loop in a small C kernel (``csrc/wavenet_step.c``).

The kernel is compiled at first use with the system C compiler (``cc``; no torch headers, no
extra Python package) into a cache folder (``$VQSPEECH_CACHE`` or ``~/.cache/vqspeech``) and loaded
through ctypes. The plain PyTorch path in ``generate.py`` stays the reference and the GPU path.
Sampling uses one uniform number per sample drawn from the given torch.Generator, so a seed
reproduces the output (the samples differ from the reference path's torch.multinomial draws).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..audio import mu_law_decode
from ..errors import UserError
from ..fileio import file_digest, write_text_atomic
from ..models.speaker_encoder import speaker_vectors
from ..models.wavenet import WaveNetDecoder, residual_layers

_SOURCE = Path(__file__).with_name("csrc") / "wavenet_step.c"
_FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-fPIC", "-shared", "-std=c99"]
_lock = threading.Lock()
_library = None

_float_p = ctypes.POINTER(ctypes.c_float)
_int_p = ctypes.POINTER(ctypes.c_int)
_long_p = ctypes.POINTER(ctypes.c_long)


SCRATCH = 4096
"""The kernel's per-stream scratch vectors (``MAXC`` in ``csrc/wavenet_step.c``): K*R, G, R+S and
the number of classes must fit."""


def _cache_dir() -> Path:
    """``$VQSPEECH_CACHE`` (``~`` expanded, made absolute; empty counts as unset) or
    ``~/.cache/vqspeech``; UserError when neither names a folder."""
    given = os.environ.get("VQSPEECH_CACHE", "").strip()
    if given:
        expanded = os.path.expanduser(given)
        if expanded.startswith("~"):  # ~name of no user: a folder of that literal name would appear here
            raise UserError(f"VQSPEECH_CACHE={given} names the home of an unknown user; give a folder path.")
        return Path(os.path.abspath(expanded))
    try:
        return Path.home() / ".cache" / "vqspeech"
    except RuntimeError:  # no HOME and no passwd entry (a container's anonymous user)
        raise UserError("No cache folder for the fast generator: set VQSPEECH_CACHE to a writable folder.") from None


def _cpu_identity() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        return next((line for line in info.splitlines() if line.startswith("flags")), info[:200])
    except OSError:
        return platform.machine() + platform.processor()


def load_kernel() -> ctypes.CDLL:
    """Compile (once per source version) and load the C kernel; UserError when no compiler works."""
    global _library
    with _lock:
        if _library is not None:
            return _library
        source = _SOURCE.read_bytes()
        given = os.environ.get("CC", "").strip()
        compiler = shlex.split(given) if given else [shutil.which("cc") or shutil.which("gcc") or ""]
        if not compiler[0]:
            raise UserError("No C compiler (cc or gcc) on PATH to build the fast generator; install one.")
        # -march=native: the build is only valid on this kind of CPU, so the CPU is part of the key
        key = " ".join([*compiler, *_FLAGS, _cpu_identity()]).encode()
        digest = hashlib.sha1(source + key).hexdigest()[:16]
        target = _cache_dir() / f"wavenet_step_{digest}.so"
        stamp = target.with_suffix(".sha256")  # the build's own digest: a damaged file is built again
        try:
            if not (target.is_file() and stamp.is_file() and stamp.read_text().strip() == file_digest(target)):
                _build(compiler, target, stamp)
            library = ctypes.CDLL(str(target))
            library.wavenet_generate.restype = ctypes.c_int
        except (OSError, AttributeError) as exc:  # a cache folder that cannot be used, a CC that is not a compiler
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
            raise UserError(
                f"Cannot build or load the fast generator in {target.parent} with CC={' '.join(compiler)} ({reason}); "
                "check VQSPEECH_CACHE and CC."
            ) from None
        _library = library
        return library


def _build(compiler: list[str], target: Path, stamp: Path) -> None:
    """Compile the kernel into ``target`` (atomically: a temporary file renamed into place) and
    record its digest in ``stamp``; UserError when the compiler fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.so")
    try:
        command = [*compiler, *_FLAGS, "-o", str(tmp), str(_SOURCE), "-lm"]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            first = next((line for line in result.stderr.splitlines() if line.strip()), "no message")
            raise UserError(f"Compiling {_SOURCE.name} with {' '.join(compiler)} failed ({first.strip()[:200]}).")
        digest = file_digest(tmp)  # OSError when the compiler wrote nothing
        os.replace(tmp, target)
        write_text_atomic(stamp, digest + "\n")
    finally:
        tmp.unlink(missing_ok=True)


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().cpu().numpy(), dtype=np.float32)


def _bias(conv: torch.nn.Conv1d) -> torch.Tensor:
    """A convolution's bias [C_out]; the kernel adds one to every convolution."""
    if conv.bias is None:
        raise ValueError("the fast generator needs a bias in every convolution")
    return conv.bias


class FastWaveNet:
    """A WaveNetDecoder's weights packed for the C kernel. CPU only.

    ``threads``: batch streams are split over this many threads (default: torch's thread count).
    ``chunk_frames``: code frames generated per step of the stream (bounds the working memory).
    """

    def __init__(self, decoder: WaveNetDecoder, threads: int | None = None, chunk_frames: int = 256):
        layers = residual_layers(decoder.layers)
        kernels = {layer.kernel_size for layer in layers}
        if len(kernels) != 1:
            raise ValueError("the fast generator needs one kernel size for every layer")
        first = layers[0]
        self.decoder, self.threads, self.chunk_frames = decoder, threads, chunk_frames
        self.K = kernels.pop()
        self.L = len(decoder.layers)
        self.R = first.residual_channels
        self.G = first.dilated.out_channels
        self.S = first.out_proj.out_channels - self.R
        self.C = decoder.classes
        self.dilations = np.array([layer.dilation for layer in layers], dtype=np.int32)
        # [G, R, K] -> [G, K*R] with tap-major columns, as the kernel gathers its window
        self.W_dil = np.stack([_f32(layer.dilated.weight.permute(0, 2, 1).reshape(self.G, -1)) for layer in layers])
        self.b_dil = np.stack([_f32(_bias(layer.dilated)) for layer in layers])
        self.W_out = np.stack([_f32(layer.out_proj.weight[:, :, 0]) for layer in layers])
        self.b_out = np.stack([_f32(_bias(layer.out_proj)) for layer in layers])
        head1, head2 = decoder.output_convs
        self.W_h1, self.b_h1 = _f32(head1.weight[:, :, 0]), _f32(_bias(head1))
        self.W_h2, self.b_h2 = _f32(head2.weight[:, :, 0]), _f32(_bias(head2))
        self.emb = _f32(decoder.input_embedding.weight)
        widest = max(self.K * self.R, self.G, self.R + self.S, self.C)
        if widest > SCRATCH:
            raise UserError(f"This decoder is too wide for the fast generator (a vector of {widest} > {SCRATCH}).")
        self.kernel = load_kernel()

    @torch.no_grad()
    def generate_classes(
        self,
        latents: torch.Tensor,
        speakers: torch.Tensor,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        return_logits: bool = False,
        progress: bool = False,
    ):
        """latents [B, D, F], speakers [B] -> mu-law classes [B, F * hop] (and logits [B, T, C]).

        Streams over chunks of ``chunk_frames`` frames: the per-layer conditioning, the uniforms
        and the kernel's state are bounded by the chunk, so memory grows only with the output.
        """
        decoder = self.decoder
        batch, frames, hop = latents.shape[0], latents.shape[-1], decoder.hop_length
        latents, speakers = latents.float().cpu(), speakers.cpu()
        speaker = speaker_vectors(decoder.speaker_embedding, speakers)
        out = np.empty((frames * hop, batch), dtype=np.int32)
        logits = np.empty((frames * hop, batch, self.C), dtype=np.float32) if return_logits else None
        # streams are independent: split the batch over threads (ctypes releases the GIL)
        workers = max(1, min(batch, self.threads or torch.get_num_threads()))
        groups = [
            _StreamGroup(self, int(g[0]), int(g[-1]) + 1) for g in np.array_split(np.arange(batch), workers) if len(g)
        ]
        bar = tqdm(
            total=frames * hop * batch,
            disable=not progress,
            unit="sample",
            unit_scale=True,
            desc="generate",
            mininterval=1.0,
        )
        reach = _conditioning_reach(decoder)
        layers = residual_layers(decoder.layers)

        def run(group: _StreamGroup, conds: np.ndarray, uniforms: np.ndarray, samples: slice) -> None:
            """One chunk of the streams of ``group``: conds [frames, B, L, G], uniforms [frames * hop, B]."""
            sl = slice(group.start, group.stop)
            group.run(
                np.ascontiguousarray(conds[:, sl]),
                uniforms[:, sl],
                temperature,
                out[samples, sl],
                None if logits is None else logits[samples, sl],
            )
            bar.update(hop * len(conds) * (group.stop - group.start))

        with ThreadPoolExecutor(len(groups)) as pool:
            for first in range(0, frames, self.chunk_frames):
                last = min(frames, first + self.chunk_frames)
                # the conditioning net sees `reach` frames on each side: compute with that margin
                lo, hi = max(0, first - reach), min(frames, last + reach)
                local = decoder.local_conditioning(latents[:, :, lo:hi])[:, :, first - lo : last - lo]
                per_layer = torch.stack([layer.conditioning(local, speaker) for layer in layers], dim=1)
                conds = per_layer.permute(3, 0, 1, 2).numpy()  # [frames, B, L, G]
                uniforms = torch.rand((last - first) * hop, batch, generator=generator).numpy()
                samples = slice(first * hop, last * hop)
                list(pool.map(partial(run, conds=conds, uniforms=uniforms, samples=samples), groups))
        bar.close()
        classes = torch.from_numpy(out.T.astype(np.int64))
        if logits is not None:  # return_logits
            return classes, torch.from_numpy(logits.transpose(1, 0, 2).copy())
        return classes

    def generate(
        self,
        latents: torch.Tensor,
        speakers: torch.Tensor,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """latents [B, D, F], speakers [B] -> waveform [B, F * hop] in [-1, 1]."""
        classes = self.generate_classes(
            latents, speakers, temperature=temperature, generator=generator, progress=progress
        )
        return mu_law_decode(classes, self.C)


def _conditioning_reach(decoder: WaveNetDecoder) -> int:
    """Frames of context on each side that the local conditioning net's convolutions use."""
    return sum(m.kernel_size[0] // 2 * m.dilation[0] for m in decoder.local_net if isinstance(m, torch.nn.Conv1d))


class _StreamGroup:
    """The kernel's state (ring buffers, last sample, time) for streams [start, stop) of a batch."""

    def __init__(self, fast: FastWaveNet, start: int, stop: int):
        self.fast, self.start, self.stop = fast, start, stop
        batch = stop - start
        sizes = (fast.K - 1) * fast.dilations.astype(np.int64) + 1
        self.offsets = np.concatenate([[0], np.cumsum(sizes * batch * fast.R)[:-1]]).astype(np.int64)
        self.buffers = np.zeros(int((sizes * batch * fast.R).sum()), dtype=np.float32)
        self.current = np.full(batch, fast.C // 2, dtype=np.int32)
        self.t = 0

    def run(
        self, conds: np.ndarray, uniforms: np.ndarray, temperature: float, out: np.ndarray, logits: np.ndarray | None
    ) -> None:
        """Generate len(conds) frames: conds [F, b, L, G], uniforms [F*hop, b] -> out [F*hop, b]."""
        fast, hop, batch = self.fast, self.fast.decoder.hop_length, self.stop - self.start
        step_out = np.empty((hop, batch), dtype=np.int32)
        step_logits = np.empty((hop, batch, fast.C), dtype=np.float32) if logits is not None else None

        def p(a, kind=_float_p):
            return a.ctypes.data_as(kind)

        for f in range(len(conds)):
            rows = slice(f * hop, (f + 1) * hop)
            frame_uniforms = np.ascontiguousarray(uniforms[rows], dtype=np.float32)
            status = fast.kernel.wavenet_generate(
                batch,
                fast.L,
                fast.R,
                fast.G,
                fast.S,
                fast.C,
                fast.K,
                p(fast.dilations, _int_p),
                p(self.buffers),
                p(self.offsets, _long_p),
                ctypes.c_long(self.t),
                p(fast.W_dil),
                p(fast.b_dil),
                p(fast.W_out),
                p(fast.b_out),
                p(fast.W_h1),
                p(fast.b_h1),
                p(fast.W_h2),
                p(fast.b_h2),
                p(fast.emb),
                p(conds[f]),
                hop,
                p(frame_uniforms),
                ctypes.c_float(temperature),
                p(self.current, _int_p),
                p(step_out, _int_p),
                p(step_logits) if step_logits is not None else None,
            )
            if status != 0:
                raise ValueError("decoder too wide for the fast generator's scratch space")
            out[rows] = step_out
            if logits is not None:
                logits[rows] = step_logits
            self.t += hop
