"""The recipes (`bash recipes/<corpus>/run.sh`) end to end on small corpora in the real layouts.

Each run trains the tiny model for a few steps: what is tested is the plumbing (stages, skipping,
resuming, messages, outputs), not model quality.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from corpus_builders import make_fsdd_corpus, make_librispeech_corpus, make_vctk_corpus

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

# Tiny model, a few steps, no media: a recipe run takes seconds. `model` is a recipe option.
QUICK = ["--model", "tiny", "--train_profile", "short", "--train_steps", "4", "--train_minutes", "",
         "--num_convert", "1", "--prior_steps", "4", "--prior_minutes", "", "--sample_seconds", "0.5",
         "--num_eval", "2", "--probe_split", "",
         "--",
         "device=cpu", "train.batch_size=4", "train.crop_seconds=0.5", "train.media_every=0",
         "train.log_every=2", "train.valid_every=1000", "train.valid_max_utterances=2",
         "train.checkpoint_every=1000", "train.warmup_steps=1"]


def recipe_env() -> dict:
    """The environment a user has after activating the venv: `vqspeech` and `python3` on PATH."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_recipe(name: str, args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(RECIPES / name / "run.sh"), *map(str, args)], cwd=cwd,
                          env=recipe_env(), capture_output=True, text=True, **kwargs)


def options(quick: list[str], **named) -> list[str]:
    """The quick settings with ``--key value`` for each named option (which wins), then overrides."""
    named_args = [item for key, value in named.items() for item in (f"--{key}", str(value))]
    cut = quick.index("--")
    return quick[:cut] + named_args + quick[cut:]


def stages_done(exp_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in (exp_dir / ".stages").iterdir())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_common_outputs(result, data_dir: Path, exp_dir: Path, corpus: dict, target: str):
    assert result.returncode == 0, result.stderr[-3000:]
    assert stages_done(exp_dir) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    manifest = read_jsonl(data_dir / "prepared/manifest.jsonl")
    assert sorted(u["id"] for u in manifest) == sorted(corpus["ids"])
    rejects = (data_dir / "prepared/rejects.tsv").read_text()
    for path in corpus["corrupt"] + corpus["silent"]:
        if "mic2" not in path:
            assert path in rejects
    assert (exp_dir / "checkpoints/last.pt").is_file()
    codes = {p.stem for p in (exp_dir / "codes/codes").glob("*.npy")}
    assert codes == set(corpus["ids"])
    assert len(list((exp_dir / "convert" / target).glob("*.wav"))) == 1
    assert json.loads((exp_dir / "prior/train_summary.json").read_text())["step"] == 4
    assert len(list((exp_dir / "prior_samples" / target).glob("sample_*.wav"))) == 2
    metrics = json.loads((exp_dir / "metrics.json").read_text())
    assert metrics["bits_per_sample"] > 0
    # stage 8: the probe of the codes and of the MFCC baseline, side by side; conversion metrics
    for system in ("vqvae", "mfcc-kmeans"):
        probe = json.loads((exp_dir / f"probe/{system}.json").read_text())
        assert probe["system"] == system and 0 <= probe["accuracy"] <= 1 and probe["num_frames"] > 0
    assert "| phone accuracy" in (exp_dir / "probe/table.md").read_text()
    assert "| phone accuracy" in result.stdout
    converted = json.loads((exp_dir / "eval_convert/metrics.json").read_text())
    assert 1 <= converted["summary"]["num_items"] <= 2
    # stage 9: the report links what exists
    report = (exp_dir / "report.html").read_text()
    assert "probe/vqvae_code_phone.png" in report and "eval_convert/conversion/" in report
    # phone alignments: every utterance with a transcript is tried; the manifest points at them
    record = json.loads((data_dir / "align/align.json").read_text())["summary"]
    assert record["total"] == len(corpus["ids"]) + len(corpus["rejected_ids"])
    assert record["aligned"] >= 0.5 * len(corpus["texts"])
    failed = (data_dir / "align/failed.tsv").read_text()
    for utt_id in corpus["missing_text"]:
        assert f"{utt_id}\t" in failed and "no transcript" in failed
    aligned = {p.stem for p in (data_dir / "align").glob("*.TextGrid")}
    assert {u["id"] for u in manifest if u.get("alignment")} == aligned & {u["id"] for u in manifest}
    # the summary says what ran and where things are
    assert "== summary of" in result.stdout
    assert "phone alignments" in result.stdout and "align.json" in result.stdout


@pytest.mark.slow
def test_vctk_recipe_end_to_end_then_skips(tmp_path):
    corpus = make_vctk_corpus(tmp_path / "VCTK-Corpus-0.92", utts_per_speaker=5)
    data_dir, exp_dir = tmp_path / "data", tmp_path / "exp"
    args = options(QUICK, vctk_root=corpus["corpus_dir"], data_dir=data_dir, exp_dir=exp_dir,
                   sample_rate=8000, targets="p226")
    result = run_recipe("vctk", args, tmp_path)
    check_common_outputs(result, data_dir, exp_dir, corpus, "p226")
    assert "stage 0: download VCTK 0.92" in result.stdout and "skipped" in result.stdout
    # mic1 is read by default: the cached audio comes from the mic1 files
    assert all("mic2" not in line for line in (data_dir / "prepared/rejects.tsv").read_text().splitlines())

    # a second run does nothing but report
    started = time.time()
    again = run_recipe("vctk", args, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    for n in (1, 2, 3, 4, 5, 6, 7, 8, 9):
        assert f"== stage {n}:" in again.stdout and "done already" in again.stdout
    assert "train vqvae" not in again.stderr  # no training progress bar: training did not run
    assert time.time() - started < 30

    # --force true redoes a stage
    forced = run_recipe("vctk", ["--stage", 8, "--stop_stage", 8, "--force", "true", *args], tmp_path)
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert "done already" not in forced.stdout and "bits_per_sample" in forced.stdout


@pytest.mark.slow
def test_librispeech_recipe_end_to_end(tmp_path):
    corpus = make_librispeech_corpus(tmp_path / "downloads", utts_per_chapter=5)
    data_dir, exp_dir = tmp_path / "data", tmp_path / "exp"
    args = options(QUICK, librispeech_root=tmp_path / "downloads/LibriSpeech", data_dir=data_dir,
                   exp_dir=exp_dir, sample_rate=8000, targets="1034")
    # a hierarchical model (VQ-VAE-2) through every stage: two code levels, two priors
    result = run_recipe("librispeech", [*args, "model.top.stride=4"], tmp_path)
    check_common_outputs(result, data_dir, exp_dir, corpus, "1034")
    assert {p.stem for p in (exp_dir / "codes/codes_top").glob("*.npy")} == set(corpus["ids"])
    assert json.loads((exp_dir / "prior_top/train_summary.json").read_text())["step"] == 4
    samples = exp_dir / "prior_samples/1034"
    assert sorted(p.name for p in (samples / "codes_top").glob("*.npy")) == ["sample_00.npy", "sample_01.npy"]


@pytest.mark.slow
def test_fsdd_recipe_end_to_end(tmp_path):
    corpus = make_fsdd_corpus(tmp_path / "fsdd", speakers=("alice", "bob"), digits=range(5), takes=7)
    data_dir, exp_dir = tmp_path / "data", tmp_path / "exp"
    args = options(QUICK, fsdd_root=tmp_path / "fsdd", data_dir=data_dir, exp_dir=exp_dir,
                   targets="bob")
    # grouped codebooks through every stage: [T, 2] codes, a prior over code tuples
    result = run_recipe("fsdd", [*args, "model.quantizer.groups=2"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert stages_done(exp_dir) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert json.loads((exp_dir / "codes/codes.json").read_text())["groups"] == 2
    sample = exp_dir / "prior_samples/bob/codes/sample_00.npy"
    assert np.load(sample).shape[1] == 2
    record = json.loads((data_dir / "align/align.json").read_text())["summary"]
    assert record["total"] == len(corpus["ids"]) and record["coverage"] >= 0.8
    recognition = json.loads((exp_dir / "eval_convert/metrics.json").read_text())["summary"]["recognition"]
    assert recognition["unit"] == "digit" and recognition["language_model"] == "digit grammar"
    assert "Free Spoken Digit Dataset" in (exp_dir / "report.html").read_text()


@pytest.mark.parametrize("recipe,option,words", [
    ("vctk", "vctk_root", ["VCTK not found at", "--vctk_root PATH", "--download true"]),
    ("librispeech", "librispeech_root", ["LibriSpeech not found at", "--librispeech_root PATH",
                                         "--download true"]),
    ("fsdd", "fsdd_root", ["FSDD not found at", "--fsdd_root PATH", "--download true"]),
])
def test_missing_corpus_stops_with_one_sentence(tmp_path, recipe, option, words):
    missing = tmp_path / "nowhere"
    result = run_recipe(recipe, [f"--{option}", missing, "--exp_dir", tmp_path / "exp",
                                 "--data_dir", tmp_path / "data"], tmp_path)
    assert result.returncode == 1
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and message.endswith(".")
    for word in [str(missing), *words]:
        assert word in message
    assert not (tmp_path / "exp/.stages").exists() and not (tmp_path / "data").exists()


def test_unknown_recipe_option(tmp_path):
    result = run_recipe("vctk", ["--vctk_rot", "x"], tmp_path)
    assert result.returncode == 1 and "unknown option --vctk_rot" in result.stderr


@pytest.mark.parametrize("recipe", ["demo", "fsdd", "librispeech", "vctk"])
def test_only_the_recipes_settings_are_options(tmp_path, recipe):
    """A variable the recipe sets for itself (here, overrides, manifest, ...) or one of the shell's
    (HOME) is no option, and --help lists the settings only."""
    helped = run_recipe(recipe, ["--help"], tmp_path)
    listed = {line.split()[0] for line in helped.stdout.splitlines()[1:]}
    assert helped.returncode == 0 and {"--stage", "--stop_stage", "--exp_dir"} <= listed
    assert not listed & {"--here", "--overrides", "--missing", "--manifest", "--name"}
    for option in ("--here", "--overrides", "--HOME", "--_name"):
        result = run_recipe(recipe, [option, "/tmp", "--stage", "100"], tmp_path)
        assert result.returncode == 1 and f"unknown option {option}" in result.stderr
    assert not any(tmp_path.iterdir())


def test_a_known_option_is_never_taken_for_an_unknown_one(tmp_path):
    """With `set -o pipefail`, `echo "$options" | grep -q` failed about once in 400 parses (grep
    left at its first match and echo, still writing, died of SIGPIPE), so a recipe now and then
    called --stop_stage unknown. 2,000 parses of the FSDD recipe's options must all take it."""
    root = Path(__file__).parents[1]
    header = [line for line in (root / "recipes/fsdd/run.sh").read_text().splitlines()
              if re.match(r"[a-z_]+=", line) and "parse_options" not in line]
    script = tmp_path / "run.sh"
    script.write_text("\n".join([
        "set -euo pipefail", *header,
        "for i in $(seq 2000); do",
        f'  ( . "{root / "recipes/utils/parse_options.sh"}" --stop_stage 3 ) || exit 1',
        "done", "echo parsed", ""]))
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "parsed" in result.stdout, result.stderr


@pytest.mark.parametrize("args,words", [
    (["train.max_steps=3", "--stop_stage", "0"], "option --stop_stage comes after the config overrides"),
    (["--stage", "abc"], "--stage must be a whole number (at most 9 digits), not 'abc'"),
    (["--stage=abc"], "--stage must be a whole number (at most 9 digits), not 'abc'"),
    (["--stop_stage", ""], "--stop_stage must be a whole number"),
    (["--stop_stage", "99999999999999999999"], "--stop_stage must be a whole number (at most 9 digits)"),
    (["--stage", "5", "--stop_stage", "1"], "--stage 5 comes after --stop_stage 1, so no stage would run"),
    (["--force", "yes"], "--force must be true or false, not 'yes'"),
    (["--nproc", "abc"], "--nproc must be a whole number of 1 or more (at most 9 digits), not 'abc'"),
    (["--num_samples", "08"], "--num_samples must be a whole number of 1 or more (at most 9 digits), not '08'"),
    (["--train_minutes", "0"], "--train_minutes must be a number of minutes above 0, or '' for no budget"),
    (["--sample_seconds", "abc"], "--sample_seconds must be a number of seconds above 0, not 'abc'"),
    (["--exp_dir", ""], "--exp_dir must name a folder, not be empty"),
    (["--data_dir", ""], "--data_dir must name a folder, not be empty"),
    (["--probe_split", "tset"], "--probe_split must be train, valid, test or '' (every utterance), not 'tset'"),
    (["--targets", ","], "--targets must name at least one speaker"),
    (["--targets", "a,E*"], "the target speaker 'E*' cannot name an output folder"),
    (["--prior_arch", "transfomer"], "--prior_arch transfomer is not a prior architecture; choose one of"),
    (["--model", "tiyn"], "Could not find 'model/tiyn'; available model configs"),
    (["--", "train.bogus=1"], "train.bogus is not a setting of this configuration"),
    (["--", "model=small"], "the override model=small sets what the recipe's options set"),
    (["--.*", "x"], "unknown option --.*"),
    (["--data_dir", "--exp_dir", "x"], "option --data_dir needs a value, not the option --exp_dir"),
])
def test_recipe_options_are_checked_before_any_stage(tmp_path, args, words):
    result = run_recipe("fsdd", args, tmp_path)
    assert result.returncode == 1 and words in result.stderr and "== stage" not in result.stdout, result.stderr
    assert "Traceback" not in result.stderr and not any(tmp_path.iterdir())


def test_a_number_option_is_never_evaluated_as_shell_code(tmp_path):
    result = run_recipe("fsdd", ["--num_samples", f"stage[$(touch {tmp_path / 'ran'})]"], tmp_path)
    assert result.returncode == 1 and "--num_samples must be a whole number" in result.stderr
    assert not (tmp_path / "ran").exists()


def test_a_recipe_run_with_sh_says_to_use_bash(tmp_path):
    result = subprocess.run(["sh", str(RECIPES / "fsdd/run.sh")], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2 and "run the recipe with bash" in result.stderr


@pytest.mark.slow
def test_interrupted_training_stage_resumes(tmp_path):
    corpus = make_fsdd_corpus(tmp_path / "fsdd", speakers=("alice", "bob"), digits=range(4), takes=7)
    data_dir, exp_dir = tmp_path / "data", tmp_path / "exp"
    quick = [a for a in QUICK if not a.startswith("train.checkpoint_every")] + ["train.checkpoint_every=2"]
    base = dict(fsdd_root=corpus["corpus_dir"], data_dir=data_dir, exp_dir=exp_dir, stop_stage=2)
    cmd = ["bash", str(RECIPES / "fsdd/run.sh"),
           *map(str, options(quick, **base, train_steps=100000))]
    log = tmp_path / "first_run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=recipe_env(), stdout=out, stderr=out,
                                start_new_session=True)
    first = exp_dir / "checkpoints/step-2.pt"
    deadline = time.time() + 120
    while not first.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, log.read_text()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)  # as if the machine went down mid-training
    proc.wait()
    assert first.is_file(), "training never wrote its first checkpoint"
    assert stages_done(exp_dir) == [1]  # stage 2 did not finish

    import torch
    reached = torch.load(exp_dir / "checkpoints/last.pt", weights_only=True)["step"]
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    result = run_recipe("fsdd", options(quick, **base, train_steps=reached + 4), tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "stage 1: prepare the manifest (8000 Hz): done already" in result.stdout
    assert stages_done(exp_dir) == [1, 2]
    summary = json.loads((exp_dir / "train_summary.json").read_text())
    assert summary["step"] == reached + 4
    # resumed, not restarted: the early checkpoint was never written again
    assert hashlib.sha256(first.read_bytes()).hexdigest() == digest


@pytest.mark.slow
def test_training_stage_with_torchrun(tmp_path):
    """`--nproc 2` trains with torchrun (two CPU processes, gloo) through the same stage."""
    corpus = make_fsdd_corpus(tmp_path / "fsdd", speakers=("alice", "bob"), digits=range(3), takes=7)
    exp_dir = tmp_path / "exp"
    args = options(QUICK, fsdd_root=corpus["corpus_dir"], data_dir=tmp_path / "data",
                   exp_dir=exp_dir, stop_stage=2, nproc=2)
    result = run_recipe("fsdd", args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert stages_done(exp_dir) == [1, 2]
    assert json.loads((exp_dir / "train_summary.json").read_text())["step"] == 4

    # a folder another training holds: one sentence before torchrun starts (not one per process and
    # torchrun's ChildFailedError traceback)
    from vqspeech.fileio import FolderLock, process_start

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock = FolderLock(exp_dir, "train")
        lock.path.write_text(json.dumps({"pid": holder.pid, "host": lock.host, "verb": "train",
                                         "started": 0, "process_start": process_start(holder.pid)}))
        result = run_recipe("fsdd", options(args, stage=2, force="true", train_steps=6), tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1 and result.stderr.count("is in use by") == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr


# ----------------------------------------------------------------------------------------------
# utils/download.sh (stage 0): checksum, unpacking, no second download


def _archive(tmp_path: Path, kind: str) -> Path:
    src = tmp_path / "src"
    (src / "wav48_silence_trimmed/p225").mkdir(parents=True)
    (src / "wav48_silence_trimmed/p225/p225_001_mic1.flac").write_bytes(b"x" * 100)
    if kind == "zip":
        path = tmp_path / "corpus.zip"
        with zipfile.ZipFile(path, "w") as z:
            z.write(src / "wav48_silence_trimmed/p225/p225_001_mic1.flac",
                    "wav48_silence_trimmed/p225/p225_001_mic1.flac")
    else:
        path = tmp_path / "corpus.tar.gz"
        with tarfile.open(path, "w:gz") as t:
            t.add(src / "wav48_silence_trimmed", arcname="wav48_silence_trimmed")
    return path


def _download(url: str, sha: str, archive_dir: Path, extract_dir: Path):
    return subprocess.run(["bash", str(RECIPES / "utils/download.sh"), url, sha, str(archive_dir),
                           str(extract_dir)], capture_output=True, text=True)


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_download_checks_sha256_and_unpacks_once(tmp_path, kind):
    archive = _archive(tmp_path, kind)
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    out = tmp_path / "corpus"
    result = _download(archive.as_uri(), sha, tmp_path / "dl", out)
    assert result.returncode == 0, result.stderr
    assert (out / "wav48_silence_trimmed/p225/p225_001_mic1.flac").read_bytes() == b"x" * 100
    archive.unlink()  # a second call needs neither the network nor the archive
    again = _download(archive.as_uri(), sha, tmp_path / "dl", out)
    assert again.returncode == 0 and "already unpacked" in again.stdout


def test_download_rejects_a_wrong_checksum(tmp_path):
    archive = _archive(tmp_path, "zip")
    out = tmp_path / "corpus"
    result = _download(archive.as_uri(), "0" * 64, tmp_path / "dl", out)
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert "Checksum of" in message and "deleted" in message and "0" * 64 in message
    assert not (tmp_path / "dl/corpus.zip").exists()
    assert not (out / "wav48_silence_trimmed").exists()


def test_download_leaves_an_archive_it_did_not_fetch(tmp_path):
    placed = tmp_path / "dl/corpus.zip"
    placed.parent.mkdir()
    placed.write_text("someone's file")
    result = _download((tmp_path / "corpus.zip").as_uri(), "0" * 64, tmp_path / "dl", tmp_path / "c")
    assert result.returncode == 1 and "is not the archive this stage downloads" in result.stderr
    assert placed.read_text() == "someone's file"


def test_download_failure_names_the_url(tmp_path):
    result = _download((tmp_path / "absent.zip").as_uri(), "0" * 64, tmp_path / "dl", tmp_path / "c")
    assert result.returncode == 1
    assert "Download of" in result.stderr and "absent.zip" in result.stderr


def test_a_forced_stage_that_fails_leaves_no_marker(tmp_path):
    """`--force true` reruns a finished stage; if that rerun fails, the stage must count as not done."""
    script = f"""
        set -e
        stage=0 stop_stage=100 force=true exp_dir={tmp_path}/exp
        . {RECIPES}/utils/stage.sh
        mkdir -p $exp_dir/.stages && printf '1 s\\told run\\n' > $exp_dir/.stages/9
        if run_stage 9 "report"; then false; stage_done 9; fi
    """
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert result.returncode != 0 and "== stage 9: report" in result.stdout
    assert not (tmp_path / "exp/.stages/9").exists()


def test_a_forced_stage_makes_the_stages_after_it_not_done(tmp_path):
    """What stages 3-9 made came from stage 2's old result: after a forced stage 2 (here with
    --stop_stage 2), they are not done, so the summary does not list them and the next run redoes
    them. A stage that never finished (stage 0 without --download) takes no one's marker away."""
    script = f"""
        set -e
        stage=0 stop_stage=2 force=true exp_dir={tmp_path}/exp
        . {RECIPES}/utils/stage.sh
        mkdir -p $exp_dir/.stages
        for n in 1 2 3 4 9; do printf '1 s\told run\n' > $exp_dir/.stages/$n; done
        if run_stage 0 "download"; then :; fi
        ls $exp_dir/.stages | tr '\n' ' '; echo
        if run_stage 2 "train"; then stage_done 2; fi
        ls $exp_dir/.stages | tr '\n' ' '
    """
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == "1 2 3 4 9 " and lines[-1] == "1 2 ", lines


def test_two_stage_training_in_the_recipe(tmp_path):
    """--units_minutes: stage 2 trains the units in EXP/units, then the decoder on their frozen
    codes in EXP; encode and convert use the result as any other experiment."""
    make_fsdd_corpus(tmp_path / "fsdd", speakers=("alice", "bob"), digits=range(3), takes=7)
    exp_dir = tmp_path / "exp"
    args = options(QUICK, fsdd_root=tmp_path / "fsdd", data_dir=tmp_path / "data", exp_dir=exp_dir,
                   targets="bob", stop_stage=4, units_minutes=5, units_steps=3)
    result = run_recipe("fsdd", [*args, "model.objective=mel"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "units first" in result.stdout
    units = torch.load(exp_dir / "units/checkpoints/last.pt", weights_only=True)
    full = torch.load(exp_dir / "checkpoints/last.pt", weights_only=True)
    assert units["step"] == 3 and full["step"] == 4
    assert full["config"]["train"]["units_from"] == str((exp_dir / "units").resolve())
    assert all(torch.equal(units["model"][k], full["model"][k]) for k in units["model"] if k.startswith("encoder."))
    assert len(list((exp_dir / "codes/codes").glob("*.npy"))) > 0
    assert len(list((exp_dir / "convert/bob").glob("*.wav"))) == 1


def test_a_wavenet_objective_trains_in_one_stage_whatever_the_units_budget(tmp_path):
    """The recipe asks the config what `vqspeech train` trains first: the two-stage split applies to
    a model whose objective is not wavenet (small_mel, the default), not to small or paper."""
    make_fsdd_corpus(tmp_path / "fsdd", speakers=("alice", "bob"), digits=range(2), takes=6)
    exp_dir = tmp_path / "exp"
    args = options(QUICK, fsdd_root=tmp_path / "fsdd", data_dir=tmp_path / "data", exp_dir=exp_dir,
                   stop_stage=2, units_minutes=5, units_steps=3)
    result = run_recipe("fsdd", args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "units first" not in result.stdout and not (exp_dir / "units").exists()
    assert torch.load(exp_dir / "checkpoints/last.pt", weights_only=True)["config"]["train"]["units_from"] is None
    # a budget the model does not use is no setting of its stage: another one is no reason to redo it
    assert "units_minutes" not in (exp_dir / ".stages/2").read_text()
    other = options(QUICK, fsdd_root=tmp_path / "fsdd", data_dir=tmp_path / "data", exp_dir=exp_dir,
                    stop_stage=2, units_minutes=7, units_steps=4)
    again = run_recipe("fsdd", other, tmp_path)
    assert again.returncode == 0 and again.stdout.count("done already") == 2, again.stderr[-2000:]


def test_a_rerun_with_other_settings_is_not_called_done(tmp_path):
    """A stage's marker records the settings its result depends on: a rerun that changes one stops,
    naming it, instead of reporting a model, a corpus or conversions that were never made."""
    make_fsdd_corpus(tmp_path / "fsdd", speakers=("alice", "bob"), digits=range(3), takes=6)
    args = options(QUICK, fsdd_root=tmp_path / "fsdd", data_dir=tmp_path / "data", exp_dir=tmp_path / "exp",
                   targets="bob", stop_stage=4)
    assert run_recipe("fsdd", args, tmp_path).returncode == 0
    marker = (tmp_path / "exp/.stages/2").read_text()
    assert "model=tiny" in marker and "train.batch_size=4" in marker
    same = run_recipe("fsdd", args, tmp_path)
    assert same.returncode == 0 and same.stdout.count("done already") == 4
    cut = args.index("--")  # the same folder spelled otherwise, the same overrides in another order
    respelled = options([*args[:cut], "--", *reversed(args[cut + 1:])], fsdd_root=f"{tmp_path}/./fsdd/")
    same = run_recipe("fsdd", respelled, tmp_path)
    assert same.returncode == 0 and same.stdout.count("done already") == 4, same.stderr
    other = run_recipe("fsdd", options(args, model="small"), tmp_path)
    assert other.returncode == 1 and "== stage 1" in other.stdout
    assert "Stage 2 (train the VQ-VAE (small)) was done" in other.stderr and "model 'tiny' (now 'small')" in other.stderr
    targets = run_recipe("fsdd", options(args, targets="alice", stage=4), tmp_path)
    assert targets.returncode == 1 and "targets 'bob' (now 'alice')" in targets.stderr
    forced = run_recipe("fsdd", options(args, targets="alice", stage=4, force="true"), tmp_path)
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert (tmp_path / "exp/convert/alice").is_dir()
    assert re.search(r"converted wavs +1\n", forced.stdout)  # alice's, not bob's of the earlier targets


def test_another_recipes_stages_or_a_manifest_prepared_again_are_not_called_done(tmp_path):
    make_fsdd_corpus(tmp_path / "fsdd", speakers=("alice", "bob"), digits=range(3), takes=6)
    data_dir, exp_dir = tmp_path / "data", tmp_path / "exp"
    args = options(QUICK, fsdd_root=tmp_path / "fsdd", data_dir=data_dir, exp_dir=exp_dir, targets="bob",
                   stop_stage=2)
    assert run_recipe("fsdd", args, tmp_path).returncode == 0
    other = run_recipe("librispeech", options(QUICK, librispeech_root=tmp_path / "none", data_dir=data_dir,
                                              exp_dir=exp_dir, targets="bob", stop_stage=2), tmp_path)
    assert other.returncode == 1 and "Stage 1" in other.stderr and "fsdd_root" in other.stderr
    assert "librispeech_root not set (now" in other.stderr
    make_fsdd_corpus(tmp_path / "fsdd2", speakers=("alice", "carol"), digits=range(3), takes=6)
    env = recipe_env()
    prepared = subprocess.run(["vqspeech", "prepare", tmp_path / "fsdd2", data_dir / "prepared", "--layout", "fsdd",
                               "--sample_rate", "8000", "--overwrite"], env=env, capture_output=True, text=True)
    assert prepared.returncode == 0, prepared.stderr
    rerun = run_recipe("fsdd", args, tmp_path)  # the manifest was prepared again by hand: stage 2 is of other data
    assert rerun.returncode == 1 and "Stage 2" in rerun.stderr and "manifest_sha256" in rerun.stderr


def test_folders_with_quotes_and_commas_go_through_both_training_stages(tmp_path):
    make_fsdd_corpus(tmp_path / "fsdd", speakers=("alice", "bob"), digits=range(3), takes=6)
    odd = tmp_path / "it's a,b [x]"
    args = options(QUICK, fsdd_root=tmp_path / "fsdd", data_dir=odd / "data", exp_dir=odd / "exp", targets="bob",
                   stop_stage=3)
    result = run_recipe("fsdd", [*args, "model.objective=mel"], tmp_path)  # units, then the decoder on them
    assert result.returncode == 0, result.stderr[-2000:]
    assert "units first" in result.stdout and stages_done(odd / "exp") == [1, 2, 3]
    trained = torch.load(odd / "exp/checkpoints/last.pt", weights_only=True)["config"]
    assert trained["data"]["manifest"] == str(odd / "data/prepared/manifest.jsonl")
    assert trained["train"]["units_from"] == str(odd / "exp/units")


def test_target_speakers_are_checked_before_training(tmp_path):
    make_fsdd_corpus(tmp_path / "fsdd", speakers=("alice", "bob"), digits=range(3), takes=6)
    result = run_recipe("fsdd", options(QUICK, fsdd_root=tmp_path / "fsdd", data_dir=tmp_path / "data",
                                        exp_dir=tmp_path / "exp", targets="bob,nobody", stop_stage=4), tmp_path)
    assert result.returncode == 1 and "--targets names nobody, who is not a speaker of" in result.stderr
    assert not (tmp_path / "exp/checkpoints").exists() and "Traceback" not in result.stderr


def test_the_summary_shows_what_it_can_of_damaged_records(tmp_path):
    exp = tmp_path / "exp"
    (exp / ".stages").mkdir(parents=True)
    (exp / ".stages/2").write_text("3 s\ttrain\nmodel=tiny\n")
    (exp / ".stages/2.bak").write_text("an editor's backup")
    (exp / "metrics.json").write_text('{"bits_per_sample": ')
    (exp / "prior_samples/bob").mkdir(parents=True)
    (exp / "prior_samples/bob/samples.json").write_text("{}")
    (exp / "eval_convert").mkdir()
    (exp / "eval_convert/metrics.json").write_text("[1]")
    result = subprocess.run([sys.executable, str(RECIPES / "utils/summary.py"), str(exp)], capture_output=True,
                            text=True)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "stage 2: train (3 s)" in result.stdout and "metrics.json" in result.stdout
    assert "cannot be read" in result.stdout and "not a JSON object" in result.stdout


def test_the_summary_labels_what_stages_not_done_left_and_counts_the_marked_targets(tmp_path):
    """A stage forced again deletes the markers after it, not their files: those files are of an
    earlier run and were printed as current; prior samples of speakers another run sampled were too."""
    exp = tmp_path / "exp"
    (exp / ".stages").mkdir(parents=True)
    (exp / ".stages/2").write_text("3 s\ttrain\nmodel=tiny\n")
    (exp / ".stages/7").write_text("2 s\tsample\ntargets=bob\n")
    (exp / "train_summary.json").write_text('{"step": 40}')
    (exp / "metrics.json").write_text('{"step": 30, "bits_per_sample": 7.98}')  # stage 8's, from the step-30 run
    (exp / "probe").mkdir()
    (exp / "probe/table.md").write_text("| system | accuracy |\n")
    for speaker in ("bob", "carol"):  # carol was sampled by an earlier run with other targets
        (exp / "prior_samples" / speaker).mkdir(parents=True)
        (exp / "prior_samples" / speaker / "sample_00.wav").write_bytes(b"")
        (exp / "prior_samples" / speaker / "samples.json").write_text(json.dumps({"speaker": speaker}))
    result = subprocess.run([sys.executable, str(RECIPES / "utils/summary.py"), str(exp)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    line = next(line for line in lines if line.startswith("exp/metrics.json"))
    assert '"bits_per_sample": 7.98' in line and "[from an earlier run: stage 8 is not done]" in line
    assert "[from an earlier run: stage 8 is not done]" in next(line for line in lines if "phoneme probe (" in line)
    summary = next(line for line in lines if line.startswith("exp/train_summary.json"))
    assert "earlier run" not in summary
    assert any(line.startswith("prior samples of bob") and "earlier" not in line for line in lines)
    assert not any("carol" in line for line in lines)
    assert next(line for line in lines if line.startswith("prior samples (wav)")).split()[-1] == "1"

    bare = subprocess.run([sys.executable, str(RECIPES / "utils/summary.py")], capture_output=True, text=True)
    assert bare.returncode == 2 and bare.stderr.startswith("usage:") and "Traceback" not in bare.stderr
    missing = subprocess.run([sys.executable, str(RECIPES / "utils/summary.py"), str(tmp_path / "nope")],
                             capture_output=True, text=True)
    assert missing.returncode == 0 and "is no experiment folder yet" in missing.stdout


def test_a_forced_prior_stage_after_the_vq_vae_trained_on_trains_a_new_prior(tmp_path):
    """The codes were encoded again by a VQ-VAE whose codebook changed: the old prior cannot resume
    on them, so the forced stage moves it aside and trains a new one in its place."""
    make_fsdd_corpus(tmp_path / "fsdd", speakers=("alice", "bob"), digits=range(3), takes=6)
    exp_dir = tmp_path / "exp"
    args = options(QUICK, fsdd_root=tmp_path / "fsdd", data_dir=tmp_path / "data", exp_dir=exp_dir, stop_stage=3)
    assert run_recipe("fsdd", args, tmp_path).returncode == 0
    assert run_recipe("fsdd", options(args, stage=6, stop_stage=6), tmp_path).returncode == 0
    retrained = run_recipe("fsdd", options(args, stage=2, force="true", train_steps=6), tmp_path)
    assert retrained.returncode == 0, retrained.stderr[-2000:]
    result = run_recipe("fsdd", options(args, stage=6, stop_stage=6, force="true", train_steps=6), tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "learned codes encoded before the VQ-VAE trained on: moved to" in result.stdout
    aside = list(exp_dir.glob("prior.before-*"))
    assert len(aside) == 1 and (aside[0] / "checkpoints/last.pt").is_file()
    assert json.loads((exp_dir / "prior/train_summary.json").read_text())["step"] == 4


def test_the_two_stage_recipe_refuses_an_experiment_on_other_units_before_training_any(tmp_path):
    from conftest import FAST_TRAIN, run_cli

    make_fsdd_corpus(tmp_path / "fsdd", speakers=("alice", "bob"), digits=range(3), takes=6)
    args = options(QUICK, fsdd_root=tmp_path / "fsdd", data_dir=tmp_path / "data", exp_dir=tmp_path / "exp",
                   stop_stage=1)
    assert run_recipe("fsdd", args, tmp_path).returncode == 0
    manifest = tmp_path / "data/prepared/manifest.jsonl"
    mel = [*FAST_TRAIN, f"data.manifest={manifest}", "model.objective=mel", "train.max_steps=2"]
    assert run_cli(["train", tmp_path / "units", *mel]) == 0
    assert run_cli(["train", tmp_path / "decoder", *mel, f"train.units_from={tmp_path / 'units'}"]) == 0
    result = run_recipe("fsdd", [*options(args, exp_dir=tmp_path / "decoder", stage=2, stop_stage=2),
                                 "model.objective=mel"], tmp_path)
    assert result.returncode == 1 and "holds a decoder trained on the units of" in result.stderr, result.stderr
    assert not (tmp_path / "decoder/units").exists()


def test_the_demo_corpus_stage_records_the_folder_it_wrote(tmp_path):
    """Stage 0 of the demo synthesises its corpus into data_dir: done for one data_dir is not done for
    another (the rerun stops and names the setting instead of skipping into a missing corpus)."""
    script = f"""
        set -e
        stage=0 stop_stage=100 force=false exp_dir={tmp_path}/exp data_dir={tmp_path}/A
        . {RECIPES}/utils/stage.sh
        if run_stage 0 "synthesise"; then stage_done 0; fi
        data_dir={tmp_path}/./A/
        if run_stage 0 "synthesise"; then echo ran again; fi
        data_dir={tmp_path}/B
        if run_stage 0 "synthesise"; then echo ran again; fi
    """
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert result.returncode == 1 and result.stdout.count("done already") == 1 and "ran again" not in result.stdout
    assert f"data_dir '{tmp_path}/A' (now '{tmp_path}/B')" in result.stderr, result.stderr
