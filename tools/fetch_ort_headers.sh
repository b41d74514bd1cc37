#!/usr/bin/env bash
# Puts the ONNX Runtime C/C++ headers from Debian's libonnxruntime-dev into DEST
# (default .deps/onnxruntime) without installing anything on the system: apt-get
# downloads the package by name from Debian trixie into DEST using a private apt
# configuration, and dpkg -x unpacks it there. Prints the include folder.
set -euo pipefail
dest=$(realpath -m "${1:-.deps/onnxruntime}")
include="$dest/root/usr/include/onnxruntime"
if [ -f "$include/onnxruntime_cxx_api.h" ]; then echo "$include"; exit 0; fi

apt_dir="$dest/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$dest/root"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
  > "$apt_dir/sources.list"
apt_opts=(-q -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
          -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o "Debug::NoLocking=1"
          -o "APT::Sandbox::User=root")
apt-get "${apt_opts[@]}" update >&2
(cd "$dest" && apt-get "${apt_opts[@]}" download libonnxruntime-dev >&2)
dpkg -x "$dest"/libonnxruntime-dev_*.deb "$dest/root"
rm -rf "$apt_dir/lists" "$apt_dir/cache"
[ -f "$include/onnxruntime_cxx_api.h" ] || { echo "fetch_ort_headers: no headers in the package" >&2; exit 1; }
echo "$include"
