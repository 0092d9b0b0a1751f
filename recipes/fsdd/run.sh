#!/usr/bin/env bash
# Free Spoken Digit Dataset: 8 kHz spoken digits; test split = recordings 0-4 of every digit and
# speaker. Stages (see utils/stage.sh):
#   0 download (only with --download true)  1 manifest  2 train  3 encode  4 convert  5 align
#   6 train the prior  7 sample from it  8 evaluate (bits/sample, phoneme probe vs MFCC baseline,
#   conversion metrics)  9 report (HTML)
#   bash recipes/fsdd/run.sh --fsdd_root ../shared/data/fsdd [--train_minutes 115] [key=value ...]
#   --model small (or paper): the single-stage VQ-VAE of the paper, learned through the WaveNet alone
[ -n "${BASH_VERSION:-}" ] || { echo "$0: run the recipe with bash: bash $0 ..." >&2; exit 2; }
set -euo pipefail

stage=0
stop_stage=100
fsdd_root=../shared/data/fsdd   # holds recordings/{digit}_{speaker}_{n}.wav
download=false              # stage 0 fetches FSDD v1.0.10 from GitHub into download_dir when true
download_dir=downloads
data_dir=data/fsdd
exp_dir=exp/fsdd
model=small_mel             # units through the mel objective, then the WaveNet on their codes
train_profile=short
train_steps=6200            # the decoder's cosine schedule length (what 115 minutes allow on 2 cores: ~54 steps/min)
train_minutes=115           # the decoder's budget: 2 hours of training in all, where the learning curve's
                            # reconstructions reach recognition error 0.35 (README, "What each hour ...")
units_minutes=5             # a two-stage model (objective mel or cpc): the units' budget first
units_steps=6000            # the units' schedule length
nproc=1
num_convert=4
num_eval=20                 # test utterances reconstructed, converted and scored (stage 8)
probe_split=test              # split the phoneme probe scores (empty: every utterance)
targets=jackson,lucas
prior_arch=transformer      # prior over the codes: transformer | wavenet
prior_steps=1800            # prior schedule length
prior_minutes=10            # prior wall-clock budget (empty: none)
num_samples=2               # prior samples kept per target speaker (best of twice as many)
sample_seconds=2
force=false

. "$(dirname "$0")/../utils/parse_options.sh"
here=$(dirname "$0")
. "$here/../utils/stage.sh"
overrides=("$@")

if run_stage 0 "download FSDD"; then
  if [ "$download" = true ]; then
    "$here/local/download.sh" "$download_dir"
    fsdd_root="$download_dir/free-spoken-digit-dataset-1.0.10"
    echo "   FSDD is in $fsdd_root; pass --fsdd_root $fsdd_root to later runs"
    stage_done 0
  else
    echo "   skipped: reading the corpus in $fsdd_root (pass --download true to fetch it)"
  fi
fi
missing="FSDD not found at $fsdd_root: clone github.com/Jakobovski/free-spoken-digit-dataset and pass --fsdd_root PATH, or run with --download true to fetch it."

if run_stage 1 "prepare the manifest (8000 Hz)"; then
  require_corpus "$fsdd_root" "$missing"
  vqspeech prepare "$fsdd_root" "$data_dir/prepared" --layout fsdd --sample_rate 8000 --overwrite
  stage_done 1
fi

manifest="$data_dir/prepared/manifest.jsonl"
. "$here/../utils/vqvae_stages.sh"

if run_stage 5 "phone alignments (pocketsphinx)"; then
  require_corpus "$fsdd_root" "$missing"
  vqspeech align "$fsdd_root" "$data_dir/align" --layout fsdd --manifest "$manifest"
  stage_done 5
fi

. "$here/../utils/prior_stages.sh"
. "$here/../utils/evaluate_stages.sh"
python3 "$here/../utils/summary.py" "$exp_dir" "$data_dir"
