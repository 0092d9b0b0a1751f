#!/usr/bin/env bash
# The VQ-VAE stages every recipe shares, after its own data preparation (stages 0-1):
#   2 train, 3 encode, 4 convert, 5 evaluate.
# Expects: stage, stop_stage, force, exp_dir, model, train_minutes, train_steps, num_convert,
# targets, manifest (the prepared manifest.jsonl) and the array `overrides` (trailing key=value).

if run_stage 2 "train the VQ-VAE ($model, $train_minutes min)"; then
  vqspeech train "$exp_dir" model="$model" data.manifest="$manifest" \
    train=short train.max_minutes="$train_minutes" train.max_steps="$train_steps" "${overrides[@]}"
  stage_done 2
fi

if run_stage 3 "encode every utterance to codes"; then
  vqspeech encode "$exp_dir" "$manifest" "$exp_dir/codes" --latents --overwrite
  stage_done 3
fi

if run_stage 4 "convert $num_convert test utterances to: $targets"; then
  for target in ${targets//,/ }; do
    vqspeech convert "$exp_dir" "$manifest" --split test --limit "$num_convert" \
      --speaker "$target" -o "$exp_dir/convert/$target" --overwrite
  done
  stage_done 4
fi

if run_stage 5 "evaluate on the test split"; then
  vqspeech evaluate "$exp_dir" --split test --out "$exp_dir/metrics.json" --overwrite
  stage_done 5
fi
