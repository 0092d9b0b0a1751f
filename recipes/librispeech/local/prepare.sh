#!/usr/bin/env bash
# LibriSpeech -> manifest: one subset, utterances split at random (2% valid, 2% test; the
# subset is large). Utterances longer than 20 s are rare and skipped.
#   local/prepare.sh LIBRISPEECH_ROOT OUT_DIR SAMPLE_RATE SUBSET
set -euo pipefail
vqspeech prepare "$1" "$2" --layout librispeech --subset "$4" --sample_rate "$3" \
  --valid_fraction 0.02 --test_fraction 0.02 --max_duration 20 --overwrite
