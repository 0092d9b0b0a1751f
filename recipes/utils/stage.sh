#!/usr/bin/env bash
# Stage bookkeeping shared by the recipes. A finished stage leaves a marker in $exp_dir/.stages
# (its wall time and name, then the settings its result depends on); re-running it is a no-op
# unless --force true, and a rerun with other settings stops, naming them, instead of calling the
# stage done. A stage that was interrupted has no marker and runs again; the long ones (training,
# alignment) continue from where they stopped.
#
# Stage numbers used by every recipe:
#   0 download (only with --download true)   1 manifest        2 train the VQ-VAE
#   3 encode        4 convert                5 phone alignments
#   6 train the prior        7 sample from the prior
#   8 evaluate (bits/sample, phoneme probe, conversion metrics)      9 report (HTML)

# stage_settings N: the settings stage N's result depends on, one `name=value` a line: its own
# options and those of the stages whose outputs it reads (the corpus: data_dir, sample_rate, mic,
# subset and the *_root folder).
stage_settings() {
  local data="data_dir sample_rate mic subset $(compgen -v | grep '_root$' | tr '\n' ' ')"
  local train="$data model train_profile train_steps train_minutes overrides"
  # the units' budget matters only to a model that learns its units first (a one-stage model ignores it)
  [ "${first_training_stage:-units}" = units ] && train+=" units_minutes units_steps"
  local prior="prior_arch prior_steps prior_minutes" names name
  case $1 in
    0) if [[ -v download_dir ]]; then names="download_dir subset"; else names="data_dir"; fi ;;  # where it writes:
       # the downloads, or the demo's synthesised corpus in data_dir
    1|5) names=$data ;;
    2|3) names=$train ;;
    4) names="$train num_convert targets" ;;
    6) names="$train $prior" ;;
    7) names="$train $prior targets num_samples sample_seconds" ;;
    8) names="$train num_eval probe_split" ;;
    9) names="$train $prior num_convert targets num_samples sample_seconds num_eval probe_split" ;;
    *) names="" ;;
  esac
  for name in $names; do
    if [ "$name" = overrides ]; then
      if declare -p overrides >/dev/null 2>&1; then printf 'overrides=%s\n' "$(_overrides_as_set)"; fi
    elif [[ -v $name ]] && [[ $name == data_dir || $name == download_dir || $name == *_root ]] && [ -n "${!name}" ]; then
      printf '%s=%s\n' "$name" "$(realpath -m -- "${!name}")"  # the folder, however it is spelled
    elif [[ -v $name ]]; then
      printf '%s=%s\n' "$name" "${!name}"
    fi
  done
  if [ "$1" -ge 2 ] && [ -n "${manifest:-}" ]; then  # the data every stage after 1 reads: prepared again is other data
    printf 'manifest_sha256=%s\n' "$(manifest_digest "$manifest")"
  fi
}

# manifest_digest FILE: a digest of the manifest's lines without their alignments (stage 5's
# `align --manifest` adds those, and the data the other stages read stay the same); "none" when absent.
manifest_digest() {
  if [ -f "$1" ]; then
    sed -E 's/(, )?"alignment": ("([^"\\]|\\.)*"|null)//' "$1" | sha256sum | cut -c1-16
  else
    echo none
  fi
}

# The trailing overrides in sorted order when no key repeats (then their order does not matter).
_overrides_as_set() {
  [ ${#overrides[@]} -eq 0 ] && return 0
  if [ -z "$(printf '%s\n' "${overrides[@]}" | sed 's/=.*//' | sort | uniq -d)" ]; then
    printf '%s\n' "${overrides[@]}" | sort | paste -sd' ' -
  else
    echo "${overrides[*]}"
  fi
}

# changed_settings N: "name 'old' (now 'new')" for each setting stage N's marker records otherwise,
# also for a setting only one of them has (another recipe's marker; a marker without settings,
# from an older recipe, records none). The manifest's digest is compared when both have it.
changed_settings() {
  local line name old before=() changes=""
  while IFS= read -r line; do before+=("$line"); done < <(tail -n +2 "$exp_dir/.stages/$1")
  local now=() found
  while IFS= read -r line; do now+=("$line"); done < <(stage_settings "$1")
  [ ${#before[@]} -eq 0 ] && return 0  # a marker without settings, from an older recipe
  for line in "${now[@]+"${now[@]}"}"; do
    name=${line%%=*} found=false
    for old in "${before[@]}"; do
      if [ "${old%%=*}" = "$name" ]; then
        found=true
        [ "$old" = "$line" ] || changes+="${changes:+; }$name '${old#*=}' (now '${line#*=}')"
      fi
    done
    # a setting the marker does not have (another recipe's corpus option): other settings
    [ "$found" = true ] || [ "$name" = manifest_sha256 ] || changes+="${changes:+; }$name not set (now '${line#*=}')"
  done
  for old in "${before[@]}"; do  # a setting this run does not have: the marker is another recipe's
    name=${old%%=*} found=false
    for line in "${now[@]+"${now[@]}"}"; do [ "${line%%=*}" = "$name" ] && found=true; done
    case $name in  # older markers recorded the units' budget for one-stage models too
      manifest_sha256|units_minutes|units_steps) found=true ;;
    esac
    [ "$found" = true ] || changes+="${changes:+; }$name '${old#*=}' (now not set)"
  done
  echo "$changes"
}

# run_stage N NAME: true when stage N is inside [stage, stop_stage] and not already done; stops the
# recipe when it was done with other settings.
run_stage() {
  local n=$1 name=$2
  [ "$n" -ge "$stage" ] && [ "$n" -le "$stop_stage" ] || return 1
  if [ -f "$exp_dir/.stages/$n" ] && [ "$force" != true ]; then
    local changes
    changes=$(changed_settings "$n")
    if [ -n "$changes" ]; then
      echo "Stage $n ($name) was done in $exp_dir with other settings: $changes; pass --force true to redo it and the stages after it, or give a new --exp_dir." >&2
      exit 1
    fi
    echo "== stage $n: $name: done already (pass --force true to redo)"
    return 1
  fi
  echo "== stage $n: $name"
  if [ -f "$exp_dir/.stages/$n" ]; then  # a forced redo: what later stages made came from the old result
    local later
    for later in "$exp_dir"/.stages/*; do
      if [[ $(basename "$later") =~ ^[0-9]+$ ]] && [ "$(basename "$later")" -gt "$n" ]; then
        rm -f "$later"  # not done any more: the next run redoes them, the summary no longer lists them
      fi
    done
  fi
  rm -f "$exp_dir/.stages/$n"  # a forced rerun that fails must not leave the old marker behind
  STAGE_START=$(date +%s)
  STAGE_NAME=$name
  return 0
}

# stage_done N: record that stage N finished, with its wall time, name and settings.
stage_done() {
  mkdir -p "$exp_dir/.stages"
  { printf '%s s\t%s\n' "$(( $(date +%s) - STAGE_START ))" "$STAGE_NAME"; stage_settings "$1"; } \
    > "$exp_dir/.stages/$1"
}

# require_corpus PATH MESSAGE: stop with MESSAGE (one sentence) when PATH is not a folder.
require_corpus() {
  if [ ! -d "$1" ]; then
    echo "$2" >&2
    exit 1
  fi
}

# recipe_helper COMMAND ARGS...: a question to recipes/utils/recipe_helpers.py; its exit status (0 or
# 1) is the answer, and a mistake it names in one sentence (exit 2) stops the recipe.
recipe_helper() {
  local rc=0
  python3 "$(dirname "${BASH_SOURCE[0]}")/recipe_helpers.py" "$@" || rc=$?
  [ "$rc" -le 1 ] || exit 1
  return "$rc"
}

# hydra_quoted VALUE: VALUE as a quoted Hydra override value that parses back to it (a path with a
# quote, a comma or brackets; vqspeech.config.quoted_value does the same in Python).
hydra_quoted() {
  local value
  value=$(sed -E "s/(\\\\+)('|\$)/\\1\\1\\2/g" <<<"$1")  # backslashes before a quote or at the end: doubled
  value=${value//\'/\\\'}
  value=${value//\$\{/\\\$\{}
  printf "'%s'" "$value"
}

# target_list: the --targets speakers as an array (split at commas, never glob-expanded).
IFS=, read -ra target_list <<<"${targets:-}"

# Before any stage, in a recipe (it has --model): the VQ-VAE config that --model, --train_profile
# and the trailing overrides compose, and --prior_arch (what `vqspeech train` trains first: joint | units).
if [[ -v model ]]; then
  first_training_stage=$(recipe_helper check "$model" "$train_profile" "$prior_arch" "$@")
fi
