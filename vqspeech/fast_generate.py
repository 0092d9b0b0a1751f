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
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .audio import mu_law_decode
from .errors import UserError
from .models.wavenet import WaveNetDecoder

_SOURCE = Path(__file__).with_name("csrc") / "wavenet_step.c"
_FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-fPIC", "-shared", "-std=c99"]
_lock = threading.Lock()
_library = None

_float_p = ctypes.POINTER(ctypes.c_float)
_int_p = ctypes.POINTER(ctypes.c_int)
_long_p = ctypes.POINTER(ctypes.c_long)


def _cache_dir() -> Path:
    return Path(os.environ.get("VQSPEECH_CACHE", Path.home() / ".cache" / "vqspeech"))


def load_kernel() -> ctypes.CDLL:
    """Compile (once per source version) and load the C kernel; UserError when no compiler works."""
    global _library
    with _lock:
        if _library is not None:
            return _library
        source = _SOURCE.read_bytes()
        compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            raise UserError("Fast generation needs a C compiler (cc or gcc) on PATH; install one, "
                            "or use the reference generator.")
        digest = hashlib.sha1(source + " ".join([compiler, *_FLAGS]).encode()).hexdigest()[:16]
        target = _cache_dir() / f"wavenet_step_{digest}.so"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.so")
            result = subprocess.run([compiler, *_FLAGS, "-o", str(tmp), str(_SOURCE), "-lm"],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                raise UserError(f"Compiling {_SOURCE.name} failed ({result.stderr.strip()[:200]}); "
                                "use the reference generator.")
            os.replace(tmp, target)
        library = ctypes.CDLL(str(target))
        library.wavenet_generate.restype = ctypes.c_int
        _library = library
        return library


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().cpu().numpy(), dtype=np.float32)


class FastWaveNet:
    """A WaveNetDecoder's weights packed for the C kernel. CPU only.

    ``threads``: batch streams are split over this many threads (default: torch's thread count).
    """

    def __init__(self, decoder: WaveNetDecoder, threads: int | None = None):
        kernels = {layer.kernel_size for layer in decoder.layers}
        if len(kernels) != 1:
            raise ValueError("the fast generator needs one kernel size for every layer")
        first = decoder.layers[0]
        self.decoder, self.threads = decoder, threads
        self.K = kernels.pop()
        self.L = len(decoder.layers)
        self.R = first.residual_channels
        self.G = first.dilated.out_channels
        self.S = first.out_proj.out_channels - self.R
        self.C = decoder.classes
        self.dilations = np.array([layer.dilation for layer in decoder.layers], dtype=np.int32)
        # [G, R, K] -> [G, K*R] with tap-major columns, as the kernel gathers its window
        self.W_dil = np.stack([_f32(layer.dilated.weight.permute(0, 2, 1).reshape(self.G, -1))
                               for layer in decoder.layers])
        self.b_dil = np.stack([_f32(layer.dilated.bias) for layer in decoder.layers])
        self.W_out = np.stack([_f32(layer.out_proj.weight[:, :, 0]) for layer in decoder.layers])
        self.b_out = np.stack([_f32(layer.out_proj.bias) for layer in decoder.layers])
        head1, head2 = decoder.output[1], decoder.output[3]
        self.W_h1, self.b_h1 = _f32(head1.weight[:, :, 0]), _f32(head1.bias)
        self.W_h2, self.b_h2 = _f32(head2.weight[:, :, 0]), _f32(head2.bias)
        self.emb = _f32(decoder.input_embedding.weight)
        self.kernel = load_kernel()

    @torch.no_grad()
    def generate_classes(self, latents: torch.Tensor, speakers: torch.Tensor, *, temperature: float = 1.0,
                         generator: torch.Generator | None = None, return_logits: bool = False,
                         progress: bool = False):
        """latents [B, D, F], speakers [B] -> mu-law classes [B, F * hop] (and logits [B, T, C])."""
        decoder = self.decoder
        batch, frames, hop = latents.shape[0], latents.shape[-1], decoder.hop_length
        latents, speakers = latents.float().cpu(), speakers.cpu()
        local = decoder.local_conditioning(latents)
        speaker = decoder.speaker_embedding(speakers)
        # [F, B, L, G]: every layer's conditioning bias, one frame at a time
        conds = torch.stack([layer.conditioning(local, speaker) for layer in decoder.layers], dim=1)
        conds = conds.permute(3, 0, 1, 2).numpy()
        uniforms = torch.rand(frames * hop, batch, generator=generator).numpy().astype(np.float32)
        out = np.empty((frames * hop, batch), dtype=np.int32)
        logits = np.empty((frames * hop, batch, self.C), dtype=np.float32) if return_logits else None
        # streams are independent: split the batch over threads (ctypes releases the GIL)
        workers = max(1, min(batch, self.threads or torch.get_num_threads()))
        chunks = [c for c in np.array_split(np.arange(batch), workers) if len(c)]

        bar = tqdm(total=frames * hop * batch, disable=not progress, unit="sample", unit_scale=True,
                   desc="generate", mininterval=1.0)

        def run(chunk: np.ndarray) -> None:
            sl = slice(int(chunk[0]), int(chunk[-1]) + 1)
            result = self._run_frames(np.ascontiguousarray(conds[:, sl]), np.ascontiguousarray(uniforms[:, sl]),
                                      hop, temperature, return_logits, bar)
            out[:, sl] = result[0]
            if return_logits:
                logits[:, sl] = result[1]

        if len(chunks) == 1:
            run(chunks[0])
        else:
            with ThreadPoolExecutor(len(chunks)) as pool:
                list(pool.map(run, chunks))
        bar.close()
        classes = torch.from_numpy(out.T.astype(np.int64))
        if return_logits:
            return classes, torch.from_numpy(logits.transpose(1, 0, 2).copy())
        return classes

    def _run_frames(self, conds: np.ndarray, uniforms: np.ndarray, hop: int, temperature: float,
                    return_logits: bool, bar: tqdm):
        """The kernel over every frame for one group of streams: conds [F, B, L, G], uniforms [T, B]."""
        frames, batch = conds.shape[:2]
        sizes = (self.K - 1) * self.dilations.astype(np.int64) + 1
        offsets = np.concatenate([[0], np.cumsum(sizes * batch * self.R)[:-1]]).astype(np.int64)
        buffers = np.zeros(int((sizes * batch * self.R).sum()), dtype=np.float32)
        current = np.full(batch, self.C // 2, dtype=np.int32)
        out = np.empty((frames * hop, batch), dtype=np.int32)
        logits = np.empty((frames * hop, batch, self.C), dtype=np.float32) if return_logits else None

        def p(a, kind=_float_p):
            return a.ctypes.data_as(kind)

        for f in range(frames):
            t0 = f * hop
            status = self.kernel.wavenet_generate(
                batch, self.L, self.R, self.G, self.S, self.C, self.K, p(self.dilations, _int_p),
                p(buffers), p(offsets, _long_p), ctypes.c_long(t0),
                p(self.W_dil), p(self.b_dil), p(self.W_out), p(self.b_out),
                p(self.W_h1), p(self.b_h1), p(self.W_h2), p(self.b_h2), p(self.emb), p(conds[f]),
                hop, p(uniforms[t0:]), ctypes.c_float(temperature), p(current, _int_p),
                p(out[t0:], _int_p), p(logits[t0:]) if logits is not None else None)
            if status != 0:
                raise ValueError("decoder too wide for the fast generator's scratch space")
            bar.update(hop * batch)
        return out, logits

    def generate(self, latents: torch.Tensor, speakers: torch.Tensor, *, temperature: float = 1.0,
                 generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
        """latents [B, D, F], speakers [B] -> waveform [B, F * hop] in [-1, 1]."""
        classes = self.generate_classes(latents, speakers, temperature=temperature, generator=generator,
                                        progress=progress)
        return mu_law_decode(classes, self.C)
