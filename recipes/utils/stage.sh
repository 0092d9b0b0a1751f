#!/usr/bin/env bash
# Stage bookkeeping shared by the recipes. A finished stage leaves a marker in $exp_dir/.stages;
# re-running it is a no-op unless --force true. Stages that train resume on their own.

# run_stage N NAME: true when stage N is inside [stage, stop_stage] and not already done.
run_stage() {
  local n=$1 name=$2
  [ "$n" -ge "$stage" ] && [ "$n" -le "$stop_stage" ] || return 1
  if [ -f "$exp_dir/.stages/$n" ] && [ "$force" != true ]; then
    echo "== stage $n: $name: done already (pass --force true to redo)"
    return 1
  fi
  echo "== stage $n: $name"
  STAGE_START=$(date +%s)
  return 0
}

# stage_done N: record that stage N finished, with its wall time.
stage_done() {
  mkdir -p "$exp_dir/.stages"
  echo "$(( $(date +%s) - STAGE_START )) s" > "$exp_dir/.stages/$1"
}
