"""Shared fixtures: a small demo corpus, a real FSDD subset, and one briefly trained tiny model.

Everything is built once per test session in a temporary folder, on the CPU, offline.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import shared_fsdd

# Short, deterministic training settings shared by the tests (model=tiny, CPU, no media).
FAST_TRAIN = [
    "model=tiny",
    "device=cpu",
    "train.batch_size=8",
    "train.crop_seconds=0.5",
    "train.media_every=0",
    "train.log_every=5",
    "train.valid_every=1000",
    "train.valid_max_utterances=2",
    "train.checkpoint_every=1000",
    "train.threads=1",  # fixed: a count that follows the machine's load changes float sums, and resumes, in the last bits
]

FSDD_SPEAKERS = ("george", "jackson")
FSDD_DIGITS = (1, 3, 5, 8)
FSDD_INDICES = range(10)  # 0-4 are FSDD's own test split


def shared_fsdd_recordings() -> Path:
    return shared_fsdd() / "recordings"


def run_cli(argv: list[str]) -> int:
    """Run the `vqspeech` command in this process; returns its exit code."""
    from vqspeech.cli import main

    return main([str(a) for a in argv])


def cli_error(capsys, argv: list, verb: str) -> str:
    """Run a command that must fail as a user error: exit 2, one error line, no traceback (also
    for an argument its parser refuses, where argparse exits with 2 after the usage)."""
    capsys.readouterr()
    try:
        code = run_cli(argv)
    except SystemExit as stop:
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line.split("\r")[-1] for line in err.splitlines()]
    errors = [line for line in lines if line.startswith(f"vqspeech {verb}: error: ")]
    assert len(errors) == 1, err
    message = errors[0][len(f"vqspeech {verb}: error: "):]
    assert message.strip() and "\n" not in message
    return message


@pytest.fixture
def seeded():
    """torch.manual_seed(0) before the test."""
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add overhead, and on a busy 2-core machine their spinning
    made test_models ~25x slower (50 s instead of 2 s). Restored afterwards for other test files."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def demo_manifest(tmp_path_factory) -> Path:
    """24 espeak sentences by 8 demo speakers, prepared at 8 kHz; returns manifest.jsonl."""
    from vqspeech.data.demo import make_demo_corpus
    from vqspeech.data.prepare import prepare_corpus

    root = tmp_path_factory.mktemp("demo")
    corpus = make_demo_corpus(root / "corpus", num_sentences=24, progress=False)
    summary = prepare_corpus(corpus, root / "prepared", "demo", sample_rate=8000, valid_fraction=0.1,
                             test_fraction=0.1, progress=False, num_workers=0)
    assert summary.num_utterances == 24 and summary.splits["train"] > 0
    return Path(summary.manifest)


@pytest.fixture(scope="session")
def fsdd_manifest(tmp_path_factory) -> Path:
    """80 real FSDD recordings (2 speakers x 4 digits x indices 0-9) prepared at 8 kHz."""
    from vqspeech.data.prepare import prepare_corpus

    recordings = shared_fsdd_recordings()
    names = [f"{d}_{s}_{n}.wav" for s in FSDD_SPEAKERS for d in FSDD_DIGITS for n in FSDD_INDICES]
    if not recordings.is_dir() or not all((recordings / n).is_file() for n in names):
        pytest.skip(f"real FSDD recordings not found at {recordings} (set VQSPEECH_SHARED_DATA)")
    root = tmp_path_factory.mktemp("fsdd")
    corpus = root / "recordings"
    corpus.mkdir()
    for name in names:
        (corpus / name).symlink_to(recordings / name)
    summary = prepare_corpus(corpus, root / "prepared", "fsdd", sample_rate=8000, valid_fraction=0.1,
                             progress=False, num_workers=0)
    assert (summary.num_utterances, summary.num_rejected, summary.num_speakers) == (80, 0, 2)
    assert summary.splits["test"] == 40
    return Path(summary.manifest)


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory, demo_manifest) -> Path:
    """An experiment folder with model=tiny trained for 30 steps on the demo corpus (read-only!)."""
    exp = tmp_path_factory.mktemp("exp") / "tiny"
    code = run_cli(["train", exp, *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=30",
                    "train.lr=1e-2", "train.warmup_steps=5", "train.schedule=constant"])
    assert code == 0
    assert (exp / "checkpoints" / "last.pt").is_file()
    return exp
