#!/usr/bin/env bash
# VCTK -> manifest. 0.92 has two microphones per utterance (mic1 is the omni-directional
# DPA 4035 most papers use); p315 has no transcripts and p280/p362 lack some mic2 files, which
# the reader handles. Utterances are split at random (5% valid, 5% test); all speakers train.
#   local/prepare.sh VCTK_ROOT OUT_DIR SAMPLE_RATE MIC
set -euo pipefail
vqspeech prepare "$1" "$2" --layout vctk --mic "$4" --sample_rate "$3" \
  --valid_fraction 0.05 --test_fraction 0.05 --overwrite
