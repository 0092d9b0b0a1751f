#!/usr/bin/env bash
# The embedded demo corpus end to end: synthesise (espeak-ng), prepare, train the small VQ-VAE,
# encode, convert voices, align, train a prior over the codes and sample speech from it,
# evaluate. Sized for under 20 minutes on 2 CPU cores.
# Stages (see utils/stage.sh): 0 synthesise  1 manifest  2 train  3 encode  4 convert
#   5 align (pocketsphinx, scored against the corpus's exact alignments)  6 train the prior
#   7 sample from it  8 evaluate (bits/sample, phoneme probe vs MFCC baseline, conversion)  9 report
#   bash recipes/demo/run.sh [--stage N] [--stop_stage N] [--train_minutes M] [key=value ...]
#   --model small (or paper): the single-stage VQ-VAE of the paper, learned through the WaveNet alone
[ -n "${BASH_VERSION:-}" ] || { echo "$0: run the recipe with bash: bash $0 ..." >&2; exit 2; }
set -euo pipefail

stage=0
stop_stage=100
data_dir=data/demo          # synthesised corpus, prepared manifest, alignments
exp_dir=exp/demo            # experiment folder (checkpoints, tb, codes, convert, metrics)
model=small_mel             # units through the mel objective, then the WaveNet on their codes
train_profile=short
train_steps=550             # the decoder's cosine schedule length (what 9 minutes allow on 2 cores: ~1 step/s)
train_minutes=9             # the decoder's wall-clock budget (12 minutes of training in all)
units_minutes=3             # a two-stage model (objective mel or cpc): the units' budget first
units_steps=6000            # the units' schedule length (about 3 minutes on 2 cores)
nproc=1
sample_rate=8000
num_convert=3               # test utterances converted to each target speaker
num_eval=12                 # test utterances reconstructed, converted and scored (stage 8)
probe_split=                  # split the phoneme probe scores (empty: all 240 utterances; test has 6)
targets=us_f3,gb_m1         # target speakers for conversion
prior_arch=transformer      # prior over the codes: transformer | wavenet
prior_steps=600             # prior schedule length
prior_minutes=3             # prior wall-clock budget (empty: none)
num_samples=2               # prior samples kept per target speaker (best of twice as many)
sample_seconds=2
force=false                 # redo finished stages

. "$(dirname "$0")/../utils/parse_options.sh"
here=$(dirname "$0")
. "$here/../utils/stage.sh"
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
. "$here/../utils/vqvae_stages.sh"

if run_stage 5 "phone alignments (pocketsphinx), scored against the exact ones"; then
  vqspeech align "$data_dir/corpus" "$data_dir/align" --layout demo
  python3 "$here/../../tools/compare_alignments.py" "$data_dir/corpus" "$data_dir/align" \
    --out "$data_dir/align/agreement.json" --overwrite
  stage_done 5
fi

. "$here/../utils/prior_stages.sh"
. "$here/../utils/evaluate_stages.sh"
python3 "$here/../utils/summary.py" "$exp_dir" "$data_dir"
