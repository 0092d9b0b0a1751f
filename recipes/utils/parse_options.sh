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
    --*=*)  # --name=value: the same as --name value
      _flag=$1; shift; set -- "${_flag%%=*}" "${_flag#*=}" "$@"; continue ;;
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
# Every option is checked before any stage runs: a mistake found only at the stage that uses it
# would come after hours of training. Numbers are whole numbers without leading zeros (bash reads
# 08 as octal, and evaluates any other text as an expression) and of at most 9 digits.
_fail() { echo "$0: $*" >&2; exit 1; }
for _name in $(sed 's/=.*//' <<<"$_option_lines"); do
  [[ -v $_name ]] || continue  # a line that looked like an option but set nothing
  _value=${!_name}
  case $_name in
    stage|stop_stage)
      [[ $_value =~ ^(0|[1-9][0-9]{0,8})$ ]] || _fail "--$_name must be a whole number (at most 9 digits), not '$_value'" ;;
    nproc|num_*|*_steps|sample_rate)
      [[ $_value =~ ^[1-9][0-9]{0,8}$ ]] || _fail "--$_name must be a whole number of 1 or more (at most 9 digits), not '$_value'" ;;
    *_minutes)  # empty: no wall-clock budget
      [[ -z $_value || $_value =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ && ! $_value =~ ^[0.]+$ ]] \
        || _fail "--$_name must be a number of minutes above 0, or '' for no budget, not '$_value'" ;;
    *_seconds)
      [[ $_value =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ && ! $_value =~ ^[0.]+$ ]] \
        || _fail "--$_name must be a number of seconds above 0, not '$_value'" ;;
    *_dir|*_root)  # an empty folder would put the recipe's files at the root of the file system
      [ -n "$_value" ] || _fail "--$_name must name a folder, not be empty" ;;
    force|download)
      [ "$_value" = true ] || [ "$_value" = false ] || _fail "--$_name must be true or false, not '$_value'" ;;
    *_split)  # empty: every utterance
      [[ -z $_value || $_value =~ ^(train|valid|test)$ ]] \
        || _fail "--$_name must be train, valid, test or '' (every utterance), not '$_value'" ;;
    targets)
      [ -n "${_value//,/}" ] || _fail "--targets must name at least one speaker (comma-separated), not '$_value'"
      IFS=, read -ra _names <<<"$_value"
      for _target in "${_names[@]}"; do  # target speakers become output folders
        [ -z "$_target" ] || [[ $_target =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]] \
          || _fail "the target speaker '$_target' cannot name an output folder; use letters, digits, '_', '.' and '-', starting with a letter, digit or '_'"
      done ;;
  esac
done
if [ "$stage" -gt "$stop_stage" ]; then
  _fail "--stage $stage comes after --stop_stage $stop_stage, so no stage would run"
fi
_last_stage=9  # every recipe's stages are 0-9 (utils/stage.sh)
if [ "$stage" -gt "$_last_stage" ]; then
  _fail "--stage $stage comes after the last stage, $_last_stage, so no stage would run"
fi
for _arg in "$@"; do  # what a recipe option sets is given as that option, so the stage markers record it
  case "${_arg%%=*}" in
    model|train|data.manifest)
      _fail "the override $_arg sets what the recipe's options set; give it as an option (--help lists them)" ;;
  esac
done
unset _option_lines _name _arg _value _names _target _flag
