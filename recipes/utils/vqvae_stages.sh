#!/usr/bin/env bash
# The VQ-VAE stages every recipe shares, after its own data preparation (stages 0-1):
#   2 train, 3 encode, 4 convert.
# Expects: stage, stop_stage, force, exp_dir, model, train_profile, train_minutes (empty = no
# budget), train_steps, nproc, num_convert, targets, manifest (the prepared manifest.jsonl) and
# the array `overrides` (trailing key=value Hydra overrides). Optional: units_minutes and
# units_steps: when units_minutes is set (a model whose objective is not wavenet, e.g.
# small_mel), stage 2 first trains the units in $exp_dir/units for that budget, then the WaveNet
# decoder on their frozen codes in $exp_dir for train_minutes.

vqspeech_train() {
  if [ "$nproc" -gt 1 ]; then
    torchrun --standalone --nproc_per_node="$nproc" -m vqspeech.cli train "$@"
  else
    vqspeech train "$@"
  fi
}

units_minutes=${units_minutes:-}
units_steps=${units_steps:-$train_steps}
if run_stage 2 "train the VQ-VAE ($model${units_minutes:+, units $units_minutes min}${train_minutes:+, $train_minutes min})"; then
  common=(model="$model" data.manifest="$manifest" train="$train_profile")
  train_args=("$exp_dir" "${common[@]}" train.max_steps="$train_steps")
  [ -n "$train_minutes" ] && train_args+=(train.max_minutes="$train_minutes")
  if [ -n "$units_minutes" ]; then
    echo "   units first ($exp_dir/units), then the decoder on their frozen codes"
    vqspeech_train "$exp_dir/units" "${common[@]}" train.max_steps="$units_steps" \
      train.max_minutes="$units_minutes" "${overrides[@]}"
    train_args+=(train.units_from="$exp_dir/units")
  fi
  vqspeech_train "${train_args[@]}" "${overrides[@]}"
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
