#!/usr/bin/env bash
# The VQ-VAE stages every recipe shares, after its own data preparation (stages 0-1):
#   2 train, 3 encode, 4 convert.
# Expects: stage, stop_stage, force, exp_dir, model, train_profile, train_minutes (empty = no
# budget), train_steps, nproc, num_convert, targets, manifest (the prepared manifest.jsonl) and
# the array `overrides` (trailing key=value Hydra overrides). Optional: units_minutes and
# units_steps: for a model whose objective is not wavenet (e.g. small_mel, the demo's and FSDD's
# default), stage 2 first trains the units in $exp_dir/units for units_minutes (empty: no
# budget), then the WaveNet decoder on their frozen codes in $exp_dir for train_minutes. A model
# with objective wavenet (small, paper) trains in one stage (stage.sh's first_training_stage says
# which).

vqspeech_train() {
  if [ "$nproc" -gt 1 ]; then
    recipe_helper free "$1"  # one sentence, not one per process and torchrun's traceback
    torchrun --standalone --nproc_per_node="$nproc" -m vqspeech.cli train "$@"
  else
    vqspeech train "$@"
  fi
}

units_minutes=${units_minutes:-}
units_steps=${units_steps:-$train_steps}

if run_stage 2 "train the VQ-VAE ($model${train_minutes:+, $train_minutes min})"; then
  common=(model="$model" data.manifest="$(hydra_quoted "$manifest")" train="$train_profile")
  train_args=("$exp_dir" "${common[@]}" train.max_steps="$train_steps")
  [ -n "$train_minutes" ] && train_args+=(train.max_minutes="$train_minutes")
  if [ "$stop_stage" -ge 4 ]; then  # the targets of stages 4 and 7, checked before the training
    recipe_helper targets "$manifest" "$targets"
  fi
  if [ "$first_training_stage" = units ]; then
    # a model there already must be a decoder on these units: checked before the units train
    if [ -f "$exp_dir/checkpoints/last.pt" ] && [ -f "$exp_dir/config.yaml" ]; then
      trained_on=$(python3 -c 'import sys, yaml; c = yaml.safe_load(open(sys.argv[1])) or {}
print((c.get("train") or {}).get("units_from") or "")' "$exp_dir/config.yaml")
      if [ -z "$trained_on" ]; then
        echo "$exp_dir holds a model that learned its own units in one stage, not a decoder on" \
          "$exp_dir/units, which this stage trains first; give a new --exp_dir." >&2
        exit 1
      elif [ "$(realpath -m "$trained_on")" != "$(realpath -m "$exp_dir/units")" ]; then
        echo "$exp_dir holds a decoder trained on the units of $trained_on, not of $exp_dir/units, which" \
          "this stage trains first; give a new --exp_dir." >&2
        exit 1
      fi
    fi
    echo "   units first ($exp_dir/units${units_minutes:+, $units_minutes min}), then the decoder on their frozen codes"
    units_args=("$exp_dir/units" "${common[@]}" train.max_steps="$units_steps")
    [ -n "$units_minutes" ] && units_args+=(train.max_minutes="$units_minutes")
    vqspeech_train "${units_args[@]}" "${overrides[@]}"
    train_args+=(train.units_from="$(hydra_quoted "$exp_dir/units")")
  fi
  vqspeech_train "${train_args[@]}" "${overrides[@]}"
  stage_done 2
fi

if run_stage 3 "encode every utterance to codes"; then
  vqspeech encode "$exp_dir" "$manifest" "$exp_dir/codes" --latents --overwrite
  stage_done 3
fi

if run_stage 4 "convert $num_convert test utterances to: $targets"; then
  for target in "${target_list[@]}"; do
    [ -n "$target" ] || continue
    vqspeech convert "$exp_dir" "$manifest" --split test --limit "$num_convert" \
      --speaker "$target" -o "$exp_dir/convert/$target" --overwrite
  done
  stage_done 4
fi
