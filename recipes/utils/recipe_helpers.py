"""What the recipes ask vqspeech between stages, each a subcommand; a mistake is one sentence.

    python3 recipe_helpers.py check MODEL TRAIN_PROFILE PRIOR_ARCH [override ...]
        the VQ-VAE config the recipe's options and overrides compose, and the prior architecture,
        checked before the first stage (a typo found at the stage that uses it comes after hours
        of training); prints what `vqspeech train` trains first: joint | units
    python3 recipe_helpers.py targets MANIFEST T1,T2,...
        every target speaker is a speaker of the manifest (checked before training)
    python3 recipe_helpers.py hierarchical CODES
        exit 0 when the codes have a top level, 1 when not
    python3 recipe_helpers.py stale_prior PRIOR CODES
        exit 0 when the prior learned other codes than those now in CODES, 1 when not
    python3 recipe_helpers.py free EXP_DIR
        no live process holds EXP_DIR's lock (checked before torchrun starts its processes, each of
        which would print the refusal, followed by torchrun's own traceback)

Exit 2 (and one line on stderr) for anything the user can fix; python3 is the venv's, as for every
vqspeech call of the recipes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from vqspeech.config import check_known_keys, compose, config_dir, training_stage
from vqspeech.data.codes import CodesFolder
from vqspeech.data.manifest import read_manifest
from vqspeech.errors import UserError
from vqspeech.fileio import FolderLock
from vqspeech.training.prior_task import trained_on_other_codes
from vqspeech.training.schema import check_vqvae_config


def check(model: str, profile: str, prior_arch: str, *overrides: str) -> int:
    arches = sorted(p.stem for p in (config_dir() / "prior").glob("*.yaml"))
    if prior_arch not in arches:
        raise UserError(f"--prior_arch {prior_arch} is not a prior architecture; choose one of {', '.join(arches)}.")
    given = [f"model={model}", f"train={profile}", *overrides]
    cfg = compose([*given, "data.manifest=/recipe/manifest.jsonl"])  # the manifest comes from stage 1
    check_known_keys(cfg, given)
    check_vqvae_config(cfg)
    print(training_stage(cfg))
    return 0


def targets(manifest: str, names: str) -> int:
    speakers = {u.speaker for u in read_manifest(manifest)}
    unknown = [name for name in names.split(",") if name and name not in speakers]
    if unknown:
        known = ", ".join(sorted(speakers)[:20]) + (" ..." if len(speakers) > 20 else "")
        raise UserError(f"--targets names {unknown[0]}, who is not a speaker of {manifest} ({known}); "
                        "choose target speakers of the corpus.")
    return 0


def hierarchical(codes: str) -> int:
    return 0 if CodesFolder.open(Path(codes)).info.top else 1


def stale_prior(prior: str, codes: str) -> int:
    return 0 if trained_on_other_codes(prior, codes) else 1


def free(exp_dir: str) -> int:
    FolderLock(Path(exp_dir), "train").check_free()
    return 0


COMMANDS = {"check": check, "targets": targets, "hierarchical": hierarchical, "stale_prior": stale_prior,
            "free": free}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(f"recipe_helpers: give one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[argv[0]](*argv[1:])
    except TypeError:
        print(f"recipe_helpers: wrong arguments for {argv[0]} (see the module docstring)", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
