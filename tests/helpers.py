"""Helpers shared by the test files (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

from vqspeech.config import compose


def tiny_model_config(*overrides: str) -> dict:
    """``conf/model/tiny.yaml`` with Hydra overrides of its ``model.`` keys, e.g.
    ``tiny_model_config("num_codes=16")``."""
    return compose(["model=tiny", "data.manifest=unused", *(f"model.{o}" for o in overrides)])["model"]


# A VQ-VAE config a few kilobytes large, for model-level tests of the variants.
TINY_VQVAE = tiny_model_config(
    "num_codes=16", "latent_dim=8", "encoder.n_mels=20", "encoder.channels=16",
    "quantizer.init_from_data=false", "quantizer.dead_code_threshold=0.0",
    "decoder.residual_channels=8", "decoder.gate_channels=16", "decoder.skip_channels=8", "decoder.layers=4",
    "decoder.cycles=1", "decoder.local_channels=8", "decoder.global_channels=4")


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
