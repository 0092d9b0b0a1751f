#!/usr/bin/env bash
# VCTK 0.92 (or 0.80): 109 English speakers, 44 h at 48 kHz. Stages (see utils/stage.sh):
#   0 download (only with --download true)  1 manifest  2 train  3 encode  4 convert  5 align
#   6 train the prior  7 sample from it  8 evaluate (bits/sample, phoneme probe vs MFCC baseline,
#   conversion metrics)  9 report (HTML)
#   bash recipes/vctk/run.sh --vctk_root /data/VCTK-Corpus-0.92 [--stage N] [--stop_stage N]
#        [--nproc 2] [key=value Hydra overrides ...]
[ -n "${BASH_VERSION:-}" ] || { echo "$0: run the recipe with bash: bash $0 ..." >&2; exit 2; }
set -euo pipefail

stage=0
stop_stage=100
vctk_root=downloads/VCTK-Corpus-0.92   # holds wav48_silence_trimmed/ + txt/ (0.92) or wav48/ (0.80)
download=false              # stage 0 fetches VCTK 0.92 (11 GB) into vctk_root when true
download_dir=downloads      # where the archive is kept
mic=mic1                    # VCTK 0.92 microphone: mic1 or mic2
data_dir=data/vctk          # prepared manifest and alignments
exp_dir=exp/vctk            # experiment folder (checkpoints, tb, codes, convert, metrics)
model=paper
sample_rate=16000           # must match the model config's sample_rate
train_profile=default       # conf/train/<profile>.yaml
train_steps=200000
train_minutes=              # wall-clock budget in minutes (empty: none)
units_minutes=              # with a two-stage model (e.g. model=small_mel): the units' budget first
units_steps=6000            # the units' schedule length
nproc=1                     # processes for torchrun (one per GPU)
num_convert=5               # test utterances converted to each target speaker
num_eval=20                 # test utterances reconstructed, converted and scored (stage 8)
probe_split=test              # split the phoneme probe scores (empty: every utterance)
targets=p225,p226,p227      # target speakers for conversion
prior_arch=transformer      # prior over the codes: transformer | wavenet
prior_steps=50000           # prior schedule length
prior_minutes=              # prior wall-clock budget (empty: none)
num_samples=2               # prior samples kept per target speaker (best of twice as many)
sample_seconds=2
force=false                 # redo finished stages

. "$(dirname "$0")/../utils/parse_options.sh"
here=$(dirname "$0")
. "$here/../utils/stage.sh"
overrides=("$@")
missing="VCTK not found at $vctk_root: get VCTK 0.92 from https://datashare.ed.ac.uk/handle/10283/3443 and pass --vctk_root PATH, or run with --download true to fetch it (11 GB)."

if run_stage 0 "download VCTK 0.92"; then
  if [ "$download" = true ]; then
    "$here/local/download.sh" "$download_dir" "$vctk_root"
    stage_done 0
  else
    echo "   skipped: reading the corpus in $vctk_root (pass --download true to fetch it)"
  fi
fi

if run_stage 1 "prepare the manifest ($sample_rate Hz, $mic)"; then
  require_corpus "$vctk_root" "$missing"
  "$here/local/prepare.sh" "$vctk_root" "$data_dir/prepared" "$sample_rate" "$mic"
  stage_done 1
fi

manifest="$data_dir/prepared/manifest.jsonl"
. "$here/../utils/vqvae_stages.sh"

if run_stage 5 "phone alignments (pocketsphinx)"; then
  require_corpus "$vctk_root" "$missing"
  vqspeech align "$vctk_root" "$data_dir/align" --layout vctk --mic "$mic" --manifest "$manifest"
  stage_done 5
fi

. "$here/../utils/prior_stages.sh"
. "$here/../utils/evaluate_stages.sh"
python3 "$here/../utils/summary.py" "$exp_dir" "$data_dir"
