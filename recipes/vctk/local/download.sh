#!/usr/bin/env bash
# Fetch the official VCTK 0.92 archive (CC BY 4.0, University of Edinburgh CSTR), check its
# SHA-256 and unpack it into VCTK_ROOT (the zip holds wav48_silence_trimmed/, txt/, ...).
#   local/download.sh DOWNLOAD_DIR VCTK_ROOT
set -euo pipefail
url=https://datashare.ed.ac.uk/bitstream/handle/10283/3443/VCTK-Corpus-0.92.zip
sha256=f96258be9fdc2cbff6559541aae7ea4f59df3fcaf5cf963aae5ca647357e359c
"$(dirname "$0")/../../utils/download.sh" "$url" "$sha256" "$1" "$2"
