#!/usr/bin/env bash
# Fetch one LibriSpeech subset from openslr.org (CC BY 4.0), check its SHA-256, unpack it into
# DOWNLOAD_DIR (the archive holds LibriSpeech/<subset>/).
#   local/download.sh SUBSET DOWNLOAD_DIR
set -euo pipefail
case "$1" in
  train-clean-100) sha256=d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2 ;;
  dev-clean)       sha256=76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3 ;;
  test-clean)      sha256=39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23 ;;
  *) echo "No checksum known for LibriSpeech subset '$1'; use train-clean-100, dev-clean or test-clean." >&2; exit 1 ;;
esac
"$(dirname "$0")/../../utils/download.sh" "https://www.openslr.org/resources/12/$1.tar.gz" "$sha256" "$2" "$2"
