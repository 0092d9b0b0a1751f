#!/usr/bin/env bash
# LibriSpeech train-clean-100: 251 speakers, 100 h at 16 kHz. Stages (see utils/stage.sh):
#   0 download (only with --download true)  1 manifest  2 train  3 encode  4 convert  5 align
#   6 train the prior  7 sample from it  8 evaluate (bits/sample, phoneme probe vs MFCC baseline,
#   conversion metrics)  9 report (HTML)
#   bash recipes/librispeech/run.sh --librispeech_root /data/LibriSpeech [--stage N] [--nproc 2]
#        [key=value Hydra overrides ...]
[ -n "${BASH_VERSION:-}" ] || { echo "$0: run the recipe with bash: bash $0 ..." >&2; exit 2; }
set -euo pipefail

stage=0
stop_stage=100
librispeech_root=downloads/LibriSpeech   # holds train-clean-100/<spk>/<chapter>/ (or is that folder)
subset=train-clean-100
download=false              # stage 0 fetches the subset (6.3 GB) from openslr.org when true
download_dir=downloads      # where the archive is kept; it unpacks to download_dir/LibriSpeech
data_dir=data/librispeech
exp_dir=exp/librispeech
model=paper
sample_rate=16000           # must match the model config's sample_rate
train_profile=default
train_steps=200000
train_minutes=
units_minutes=              # with a two-stage model (e.g. model=small_mel): the units' budget first
units_steps=6000            # the units' schedule length
nproc=1
num_convert=5
num_eval=20                 # test utterances reconstructed, converted and scored (stage 8)
probe_split=test              # split the phoneme probe scores (empty: every utterance)
targets=103,1034            # target speakers for conversion (train-clean-100 speaker ids)
prior_arch=transformer      # prior over the codes: transformer | wavenet
prior_steps=50000           # prior schedule length
prior_minutes=              # prior wall-clock budget (empty: none)
num_samples=2               # prior samples kept per target speaker (best of twice as many)
sample_seconds=2
force=false

. "$(dirname "$0")/../utils/parse_options.sh"
here=$(dirname "$0")
. "$here/../utils/stage.sh"
overrides=("$@")
missing="LibriSpeech not found at $librispeech_root: get $subset from https://www.openslr.org/12 and pass --librispeech_root PATH, or run with --download true to fetch it."

if run_stage 0 "download LibriSpeech $subset"; then
  if [ "$download" = true ]; then
    "$here/local/download.sh" "$subset" "$download_dir"
    stage_done 0
  else
    echo "   skipped: reading the corpus in $librispeech_root (pass --download true to fetch it)"
  fi
fi

if run_stage 1 "prepare the manifest ($subset, $sample_rate Hz)"; then
  require_corpus "$librispeech_root" "$missing"
  "$here/local/prepare.sh" "$librispeech_root" "$data_dir/prepared" "$sample_rate" "$subset"
  stage_done 1
fi

manifest="$data_dir/prepared/manifest.jsonl"
. "$here/../utils/vqvae_stages.sh"

if run_stage 5 "phone alignments (pocketsphinx)"; then
  require_corpus "$librispeech_root" "$missing"
  vqspeech align "$librispeech_root" "$data_dir/align" --layout librispeech --subset "$subset" \
    --manifest "$manifest"
  stage_done 5
fi

. "$here/../utils/prior_stages.sh"
. "$here/../utils/evaluate_stages.sh"
python3 "$here/../utils/summary.py" "$exp_dir" "$data_dir"
