#!/usr/bin/env bash
# Free Spoken Digit Dataset: 8 kHz, test split = recordings 0-4 of every digit and speaker.
#   bash recipes/fsdd/run.sh --fsdd_root ../shared/data/fsdd [--train_minutes 30] [key=value ...]
set -euo pipefail

stage=1
stop_stage=100
fsdd_root=../shared/data/fsdd
data_dir=data/fsdd
exp_dir=exp/fsdd
model=small
train_steps=2600            # cosine schedule length (about what the budget allows on 2 cores)
train_minutes=30
num_convert=4
targets=jackson,lucas
force=false

. "$(dirname "$0")/../utils/parse_options.sh"
. "$(dirname "$0")/../utils/stage.sh"
overrides=("$@")

if [ ! -d "$fsdd_root" ]; then
  echo "FSDD not found at $fsdd_root: clone github.com/Jakobovski/free-spoken-digit-dataset and pass --fsdd_root PATH." >&2
  exit 1
fi

if run_stage 1 "prepare the manifest (8000 Hz)"; then
  vqspeech prepare "$fsdd_root" "$data_dir/prepared" --layout fsdd --sample_rate 8000 --overwrite
  stage_done 1
fi

manifest="$data_dir/prepared/manifest.jsonl"
. "$(dirname "$0")/../utils/vqvae_stages.sh"

python3 "$(dirname "$0")/../utils/summary.py" "$exp_dir"
