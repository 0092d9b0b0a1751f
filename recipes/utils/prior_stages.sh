#!/usr/bin/env bash
# The prior stages every recipe shares, after encoding (stage 3):
#   6 train a prior over the codes, 7 sample speech from it for the target speakers.
# Expects: stage, stop_stage, force, exp_dir, prior_arch (transformer | wavenet), prior_steps,
# prior_minutes (empty = no budget), targets, num_samples, sample_seconds.

if run_stage 6 "train the $prior_arch prior over the codes${prior_minutes:+ ($prior_minutes min)}"; then
  prior_args=("$exp_dir/prior" prior="$prior_arch" data.codes="$exp_dir/codes" train.max_steps="$prior_steps")
  [ -n "$prior_minutes" ] && prior_args+=(train.max_minutes="$prior_minutes")
  vqspeech prior train "${prior_args[@]}"
  stage_done 6
fi

if run_stage 7 "sample $num_samples x $sample_seconds s from the prior for: $targets"; then
  for target in ${targets//,/ }; do
    vqspeech prior sample "$exp_dir/prior" --speaker "$target" --seconds "$sample_seconds" \
      --num "$num_samples" --candidates $(( 2 * num_samples )) -o "$exp_dir/prior_samples/$target" --overwrite
  done
  stage_done 7
fi
