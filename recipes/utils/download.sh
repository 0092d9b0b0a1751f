#!/usr/bin/env bash
# Download an archive once, check its SHA-256, unpack it.
#   utils/download.sh URL SHA256 ARCHIVE_DIR EXTRACT_DIR
# An interrupted download resumes (curl -C -). A download with a wrong checksum is deleted; an
# archive already there (placed by hand) with a wrong checksum is named and left alone.
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
downloaded=false
if [ ! -f "$archive" ]; then
  echo "downloading $url"
  if ! curl -fL --retry 3 -C - -o "$archive.part" "$url"; then
    echo "Download of $url failed; check the network (a partial file is kept in $archive.part and the next run resumes it)." >&2
    exit 1
  fi
  downloaded=true
fi
checked=$archive
[ "$downloaded" = true ] && checked="$archive.part"  # checked before it takes the archive's name

actual=$(sha256sum "$checked" | cut -d' ' -f1)
if [ "$sha256" = "-" ]; then
  echo "$name: sha256 $actual (no published checksum to compare with)"
elif [ "$actual" != "$sha256" ] && [ "$downloaded" = true ]; then
  rm -f "$checked"  # what this run downloaded, and only that
  echo "Checksum of the download of $url is $actual, not $sha256: it is damaged and was deleted; run the download stage again." >&2
  exit 1
elif [ "$actual" != "$sha256" ]; then  # a file this run did not download: someone's, left alone
  echo "$archive has checksum $actual, not $sha256, so it is not the archive this stage downloads; move it away (it is left as it is) and run the download stage again." >&2
  exit 1
fi
[ "$downloaded" = true ] && mv "$checked" "$archive"

echo "unpacking $name into $extract_dir"
case "$name" in
  *.zip) python3 -m zipfile -e "$archive" "$extract_dir" ;;
  *.tar.gz|*.tgz|*.tar) tar -xf "$archive" -C "$extract_dir" ;;
  *) echo "Do not know how to unpack $name; unpack it into $extract_dir by hand." >&2; exit 1 ;;
esac
touch "$marker"
