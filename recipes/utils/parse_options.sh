#!/usr/bin/env bash
# Kaldi-style option parsing for recipes: for every variable `foo` assigned at the start of a line
# of run.sh before this file is sourced, `--foo VALUE` on the command line overrides it; no other
# variable is an option. Arguments after the options (or after `--`) stay in "$@" (trailing config
# overrides such as train.max_minutes=5).
# Usage inside run.sh:  stage=0; stop_stage=100; . "$(dirname "$0")/../utils/parse_options.sh"

_option_lines=$(sed -n '1,/utils\/parse_options\.sh/p' "$0" | grep -E '^[a-z_]+=')
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      echo "Options (current values):"
      echo "$_option_lines" | sed 's/^/  --/; s/=/ /' | sed 's/ *#.*//'
      exit 0 ;;
    --) shift; break ;;
    --*)
      _name="${1#--}"; _name="${_name//-/_}"
      # a here-string, not `echo | grep -q`: under pipefail, grep leaving at its first match could
      # make echo fail with SIGPIPE, and a known option look unknown
      if ! [[ "$_name" =~ ^[a-z_]+$ ]] || ! grep -q "^${_name}=" <<<"$_option_lines"; then
        echo "$0: unknown option $1 (see --help)" >&2; exit 1
      fi
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 1; fi
      case "$2" in  # an empty value lost to word splitting would take the next option as the value
        --*) echo "$0: option $1 needs a value, not the option $2 (give an empty value as '')" >&2; exit 1 ;;
      esac
      printf -v "${_name}" '%s' "$2"
      shift 2 ;;
    *) break ;;
  esac
done
for _arg in "$@"; do  # an option after a config override would otherwise be taken as an override
  case "$_arg" in
    --*) echo "$0: option $_arg comes after the config overrides; put every --option before key=value overrides" >&2
         exit 1 ;;
  esac
done
for _name in stage stop_stage; do
  if declare -p "$_name" >/dev/null 2>&1 && ! [[ "${!_name}" =~ ^[0-9]+$ ]]; then
    echo "$0: --$_name must be a whole number, not '${!_name}'" >&2; exit 1
  fi
done
if declare -p nproc >/dev/null 2>&1 && ! [[ "$nproc" =~ ^[1-9][0-9]*$ ]]; then
  echo "$0: --nproc must be a whole number of processes, 1 or more, not '$nproc'" >&2; exit 1
fi
if declare -p targets >/dev/null 2>&1 && [ -z "${targets//,/}" ]; then
  echo "$0: --targets must name at least one speaker (comma-separated), not '$targets'" >&2; exit 1
fi
if declare -p force >/dev/null 2>&1 && [ "$force" != true ] && [ "$force" != false ]; then
  echo "$0: --force must be true or false, not '$force'" >&2; exit 1
fi
unset _option_lines _name _arg
