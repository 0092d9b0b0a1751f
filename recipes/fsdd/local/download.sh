#!/usr/bin/env bash
# Fetch FSDD release v1.0.10 (CC BY-SA 4.0, Jakobovski et al.) from GitHub and unpack it into
# DOWNLOAD_DIR/free-spoken-digit-dataset-1.0.10. GitHub publishes no checksum for tag archives:
# the SHA-256 is printed so a copy can be compared.
#   local/download.sh DOWNLOAD_DIR
set -euo pipefail
url=https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz
"$(dirname "$0")/../../utils/download.sh" "$url" - "$1" "$1"
