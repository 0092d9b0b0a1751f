#!/usr/bin/env bash
# The embedded demo corpus end to end: synthesise (espeak-ng), prepare, train the small VQ-VAE,
# encode, convert voices, evaluate. Sized for under 20 minutes on 2 CPU cores.
#   bash recipes/demo/run.sh [--stage N] [--stop_stage N] [--train_minutes M] [key=value ...]
set -euo pipefail

stage=0
stop_stage=100
data_dir=data/demo          # synthesised corpus and prepared manifest
exp_dir=exp/demo            # experiment folder (checkpoints, tb, codes, convert, metrics)
model=small
train_steps=1000            # cosine schedule length (about what the budget allows on 2 cores)
train_minutes=12            # wall-clock training budget
sample_rate=8000
num_convert=3               # test utterances converted to each target speaker
targets=us_f3,gb_m1         # target speakers for conversion
force=false                 # redo finished stages

. "$(dirname "$0")/../utils/parse_options.sh"
. "$(dirname "$0")/../utils/stage.sh"
overrides=("$@")

if run_stage 0 "synthesise the demo corpus"; then
  vqspeech demo-data "$data_dir/corpus"
  stage_done 0
fi

if run_stage 1 "prepare the manifest ($sample_rate Hz)"; then
  vqspeech prepare "$data_dir/corpus" "$data_dir/prepared" --layout demo --sample_rate "$sample_rate" \
    --valid_fraction 0.05 --test_fraction 0.05 --overwrite
  stage_done 1
fi

manifest="$data_dir/prepared/manifest.jsonl"
. "$(dirname "$0")/../utils/vqvae_stages.sh"

python3 "$(dirname "$0")/../utils/summary.py" "$exp_dir"
