#!/usr/bin/env bash
# Make sure Fashion-MNIST (the offline default data) is on disk.
# Found: NSR_DATA (if set) or the Debian package's folder. Else: install the Debian package
# when apt-get can be used, or say exactly how to get the data and fail.
set -euo pipefail
debian_dir=/usr/share/datasets/fashion-mnist
has_idx() {
  local file
  for file in "$1"/train-images-idx3-ubyte* "$1"/fashion-mnist/train-images-idx3-ubyte* \
              "$1"/FashionMNIST/raw/train-images-idx3-ubyte*; do
    [ -f "$file" ] && return 0
  done
  return 1
}

if [ -n "${NSR_DATA:-}" ] && has_idx "$NSR_DATA"; then
  echo "data: Fashion-MNIST found in NSR_DATA=$NSR_DATA"; exit 0
fi
if has_idx "$debian_dir"; then
  echo "data: Fashion-MNIST found in $debian_dir"; exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || { command -v sudo >/dev/null 2>&1 && sudo="sudo -n"; }
  echo "data: installing the Debian package dataset-fashion-mnist"
  if $sudo apt-get update -qq && $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null; then
    has_idx "$debian_dir" && { echo "data: Fashion-MNIST installed in $debian_dir"; exit 0; }
  fi
fi
cat >&2 <<MSG
data: Fashion-MNIST is missing and could not be installed here.
  Debian/Ubuntu:   sudo apt-get install dataset-fashion-mnist
  Anywhere else:   put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
                   t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz in a folder
                   and export NSR_DATA=/that/folder
MSG
exit 1
