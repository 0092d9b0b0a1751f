#!/usr/bin/env bash
# The VQ-VAE stages every recipe shares, after its own data preparation (stages 0-1):
#   2 train, 3 encode, 4 convert.
# Expects: stage, stop_stage, force, exp_dir, model, train_profile, train_minutes (empty = no
# budget), train_steps, nproc, num_convert, targets, manifest (the prepared manifest.jsonl) and
# the array `overrides` (trailing key=value Hydra overrides).

if run_stage 2 "train the VQ-VAE ($model${train_minutes:+, $train_minutes min})"; then
  train_args=("$exp_dir" model="$model" data.manifest="$manifest" train="$train_profile"
              train.max_steps="$train_steps")
  [ -n "$train_minutes" ] && train_args+=(train.max_minutes="$train_minutes")
  if [ "$nproc" -gt 1 ]; then
    torchrun --standalone --nproc_per_node="$nproc" -m vqspeech.cli train "${train_args[@]}" "${overrides[@]}"
  else
    vqspeech train "${train_args[@]}" "${overrides[@]}"
  fi
  stage_done 2
fi

if run_stage 3 "encode every utterance to codes"; then
  vqspeech encode "$exp_dir" "$manifest" "$exp_dir/codes" --latents --overwrite
  stage_done 3
fi

if run_stage 4 "convert $num_convert test utterances to: $targets"; then
  require_safe_names "target speaker" ${targets//,/ }
  for target in ${targets//,/ }; do
    vqspeech convert "$exp_dir" "$manifest" --split test --limit "$num_convert" \
      --speaker "$target" -o "$exp_dir/convert/$target" --overwrite
  done
  stage_done 4
fi
