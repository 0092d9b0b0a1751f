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

if run_stage 2 "train the VQ-VAE ($model, $train_minutes min)"; then
  vqspeech train "$exp_dir" model="$model" data.manifest="$data_dir/prepared/manifest.jsonl" \
    train=short train.max_minutes="$train_minutes" train.max_steps="$train_steps" "${overrides[@]}"
  stage_done 2
fi

if run_stage 3 "encode every utterance to codes"; then
  vqspeech encode "$exp_dir" "$data_dir/prepared/manifest.jsonl" "$exp_dir/codes" --latents --overwrite
  stage_done 3
fi

if run_stage 4 "convert $num_convert test utterances to: $targets"; then
  for target in ${targets//,/ }; do
    vqspeech convert "$exp_dir" "$data_dir/prepared/manifest.jsonl" --split test --limit "$num_convert" \
      --speaker "$target" -o "$exp_dir/convert/$target" --overwrite
  done
  stage_done 4
fi

if run_stage 5 "evaluate on the test split"; then
  vqspeech evaluate "$exp_dir" --split test --out "$exp_dir/metrics.json"
  stage_done 5
fi

python3 "$(dirname "$0")/../utils/summary.py" "$exp_dir"
