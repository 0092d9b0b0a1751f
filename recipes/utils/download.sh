#!/usr/bin/env bash
# Download an archive once, check its SHA-256, unpack it.
#   utils/download.sh URL SHA256 ARCHIVE_DIR EXTRACT_DIR
# An interrupted download resumes (curl -C -). A wrong checksum deletes the archive and stops.
# SHA256 may be "-" for sources that publish none: the digest is then printed, not checked.
# Unpacking leaves EXTRACT_DIR/.unpacked-<archive name>, so a second call does nothing.
set -euo pipefail

if [ $# -ne 4 ]; then
  echo "usage: $0 URL SHA256 ARCHIVE_DIR EXTRACT_DIR" >&2; exit 1
fi
url=$1 sha256=$2 archive_dir=$3 extract_dir=$4
name=$(basename "${url%%\?*}")
archive="$archive_dir/$name"
marker="$extract_dir/.unpacked-$name"

if [ -f "$marker" ]; then
  echo "$name: already unpacked in $extract_dir"; exit 0
fi
mkdir -p "$archive_dir" "$extract_dir"
if [ ! -f "$archive" ]; then
  echo "downloading $url"
  if ! curl -fL --retry 3 -C - -o "$archive.part" "$url"; then
    echo "Download of $url failed; check the network (a partial file is kept in $archive.part and the next run resumes it)." >&2
    exit 1
  fi
  mv "$archive.part" "$archive"
fi

actual=$(sha256sum "$archive" | cut -d' ' -f1)
if [ "$sha256" = "-" ]; then
  echo "$name: sha256 $actual (no published checksum to compare with)"
elif [ "$actual" != "$sha256" ]; then
  rm -f "$archive"
  echo "Checksum of $archive is $actual, not $sha256: the download is damaged and was deleted; run the download stage again." >&2
  exit 1
fi

echo "unpacking $name into $extract_dir"
case "$name" in
  *.zip) python3 -m zipfile -e "$archive" "$extract_dir" ;;
  *.tar.gz|*.tgz|*.tar) tar -xf "$archive" -C "$extract_dir" ;;
  *) echo "Do not know how to unpack $name; unpack it into $extract_dir by hand." >&2; exit 1 ;;
esac
touch "$marker"
