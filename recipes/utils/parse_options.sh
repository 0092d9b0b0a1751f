#!/usr/bin/env bash
# Kaldi-style option parsing for recipes: for every variable `foo` set before this file is
# sourced, `--foo VALUE` on the command line overrides it. Arguments after the options (or
# after `--`) stay in "$@" (trailing config overrides such as train.max_minutes=5).
# Usage inside run.sh:  stage=0; stop_stage=100; . "$(dirname "$0")/../utils/parse_options.sh"

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      echo "Options (current values):"
      grep -E '^[a-z_]+=' "$0" | sed 's/^/  --/; s/=/ /' | sed 's/ *#.*//'
      exit 0 ;;
    --) shift; break ;;
    --*)
      name="${1#--}"; name="${name//-/_}"
      if [ -z "${name}" ] || ! declare -p "${name}" >/dev/null 2>&1; then
        echo "$0: unknown option $1 (see --help)" >&2; exit 1
      fi
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 1; fi
      printf -v "${name}" '%s' "$2"
      shift 2 ;;
    *) break ;;
  esac
done
