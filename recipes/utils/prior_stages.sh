#!/usr/bin/env bash
# The prior stages every recipe shares, after encoding (stage 3):
#   6 train a prior over the codes, 7 sample speech from it for the target speakers.
# Hierarchical codes (codes.json has a "top" entry) take two priors: $exp_dir/prior_top over the
# top codes (data.level=top) and $exp_dir/prior over the bottom codes given the top ones; sampling
# draws from both.
# Expects: stage, stop_stage, force, exp_dir, prior_arch (transformer | wavenet), prior_steps,
# prior_minutes (empty = no budget), targets, num_samples, sample_seconds.

# true when the encoded codes have a top level
hierarchical_codes() {
  recipe_helper hierarchical "$exp_dir/codes"
}

# A prior that learned other codes (the VQ-VAE trained on and the codes were encoded again) cannot
# resume on today's: it is moved aside, and a new prior is trained in its place.
retire_stale_prior() {
  if recipe_helper stale_prior "$1" "$exp_dir/codes"; then
    local aside
    aside="$1.before-$(date +%Y%m%d-%H%M%S)"
    echo "   $1 learned codes encoded before the VQ-VAE trained on: moved to $aside; a new prior is trained"
    mv "$1" "$aside"
  fi
}

if run_stage 6 "train the $prior_arch prior over the codes${prior_minutes:+ ($prior_minutes min)}"; then
  prior_args=(prior="$prior_arch" data.codes="$(hydra_quoted "$exp_dir/codes")" train.max_steps="$prior_steps")
  [ -n "$prior_minutes" ] && prior_args+=(train.max_minutes="$prior_minutes")
  if hierarchical_codes; then
    retire_stale_prior "$exp_dir/prior_top"
    vqspeech prior train "$exp_dir/prior_top" "${prior_args[@]}" data.level=top
  fi
  retire_stale_prior "$exp_dir/prior"
  vqspeech prior train "$exp_dir/prior" "${prior_args[@]}"
  stage_done 6
fi

if run_stage 7 "sample $num_samples x $sample_seconds s from the prior for: $targets"; then
  top_args=()
  if hierarchical_codes; then top_args=(--top_prior "$exp_dir/prior_top"); fi
  for target in "${target_list[@]}"; do
    [ -n "$target" ] || continue
    vqspeech prior sample "$exp_dir/prior" ${top_args[@]+"${top_args[@]}"} --speaker "$target" \
      --seconds "$sample_seconds" --num "$num_samples" --candidates $(( 2 * num_samples )) \
      -o "$exp_dir/prior_samples/$target" --overwrite
  done
  stage_done 7
fi
