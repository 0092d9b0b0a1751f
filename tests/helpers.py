"""Helpers shared by the test files (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

# A VQ-VAE config a few kilobytes large, for model-level tests of the variants.
TINY_VQVAE = {
    "sample_rate": 8000, "hop_length": 80, "num_codes": 16, "latent_dim": 8,
    "encoder": {"frontend": "mel", "n_mels": 20, "n_fft": None, "strides": [5, 4, 4], "channels": 16,
                "dilations": [1, 2]},
    "quantizer": {"beta": 0.25, "ema": False, "decay": 0.99, "init_from_data": False,
                  "dead_code_threshold": 0.0, "usage_decay": 0.9},
    "decoder": {"residual_channels": 8, "gate_channels": 16, "skip_channels": 8, "kernel_size": 2,
                "layers": 4, "cycles": 1, "local_channels": 8, "global_channels": 4},
}


def shared_fsdd() -> Path:
    """The real FSDD folder: $VQSPEECH_SHARED_DATA/fsdd, else ../shared/data/fsdd from the repo.

    VQSPEECH_SHARED_DATA may name the folder holding ``fsdd/`` or its parent. Tests that need the
    data skip when the folder is absent.
    """
    env = os.environ.get("VQSPEECH_SHARED_DATA")
    if env:
        for candidate in (Path(env) / "fsdd", Path(env) / "data" / "fsdd"):
            if candidate.is_dir():
                return candidate
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"


def run_torchrun(tmp_path: Path, script: str, argv: list[str], nproc: int = 2):
    """Run ``script`` (Python source; ranks write into $VQS_TEST_OUT) under torchrun on the CPU.

    Returns (completed process, the record folder the ranks wrote to).
    """
    import subprocess
    import sys

    helper = tmp_path / "ddp_train.py"
    helper.write_text(script)
    record = tmp_path / "ranks"
    record.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VQS_TEST_OUT": str(record)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(helper), *map(str, argv)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300), record
