"""Helpers shared by the test files (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path


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
