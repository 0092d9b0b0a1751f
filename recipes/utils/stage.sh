#!/usr/bin/env bash
# Stage bookkeeping shared by the recipes. A finished stage leaves a marker in $exp_dir/.stages
# (its wall time and name); re-running it is a no-op unless --force true. A stage that was
# interrupted has no marker and runs again; the long ones (training, alignment) continue from
# where they stopped.
#
# Stage numbers used by every recipe:
#   0 download (only with --download true)   1 manifest        2 train the VQ-VAE
#   3 encode        4 convert                5 phone alignments
#   6 train the prior        7 sample from the prior
#   8 evaluate (bits/sample, phoneme probe, conversion metrics)      9 report (HTML)

# run_stage N NAME: true when stage N is inside [stage, stop_stage] and not already done.
run_stage() {
  local n=$1 name=$2
  [ "$n" -ge "$stage" ] && [ "$n" -le "$stop_stage" ] || return 1
  if [ -f "$exp_dir/.stages/$n" ] && [ "$force" != true ]; then
    echo "== stage $n: $name: done already (pass --force true to redo)"
    return 1
  fi
  echo "== stage $n: $name"
  rm -f "$exp_dir/.stages/$n"  # a forced rerun that fails must not leave the old marker behind
  STAGE_START=$(date +%s)
  STAGE_NAME=$name
  return 0
}

# stage_done N: record that stage N finished, with its wall time and name.
stage_done() {
  mkdir -p "$exp_dir/.stages"
  printf '%s s\t%s\n' "$(( $(date +%s) - STAGE_START ))" "$STAGE_NAME" > "$exp_dir/.stages/$1"
}

# require_safe_names WHAT NAME...: stop with one sentence unless every NAME is safe as a folder name
# (letters, digits, _ . -, starting with a letter, digit or _): target speakers become output folders.
require_safe_names() {
  local what=$1 name
  shift
  for name in "$@"; do
    if ! [[ $name =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]]; then
      echo "The $what '$name' cannot name an output folder; use letters, digits, '_', '.' and '-', starting with a letter, digit or '_'." >&2
      exit 1
    fi
  done
}

# require_corpus PATH MESSAGE: stop with MESSAGE (one sentence) when PATH is not a folder.
require_corpus() {
  if [ ! -d "$1" ]; then
    echo "$2" >&2
    exit 1
  fi
}
