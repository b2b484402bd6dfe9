#!/usr/bin/env bash
# Make sure Fashion-MNIST (the offline default data) is on disk.
# Found: NSR_DATA (if set), the Debian package's folder, or <cache>/data (torchvision's
# download folder, cache = ${NSR_CACHE:-~/.cache/nsr_env}); all four idx files must be there.
# Else: install the Debian package when apt-get can be used, or say exactly how to get the
# data and fail. The optional argument replaces the Debian folder (tests use it).
set -euo pipefail
debian_dir=${1:-/usr/share/datasets/fashion-mnist}
cache_data="${NSR_CACHE:-$HOME/.cache/nsr_env}/data"

# has_idx DIR: all four idx files, gzipped or not, at the top of DIR, in DIR/fashion-mnist
# or in DIR/FashionMNIST/raw (the places nsr_env.data looks).
has_idx() {
  local base name
  for base in "$1" "$1/fashion-mnist" "$1/FashionMNIST/raw"; do
    for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
      [ -f "$base/$name.gz" ] || [ -f "$base/$name" ] || continue 2
    done
    return 0
  done
  return 1
}

if [ -n "${NSR_DATA:-}" ] && has_idx "$NSR_DATA"; then
  echo "data: Fashion-MNIST found in NSR_DATA=$NSR_DATA"; exit 0
fi
for folder in "$debian_dir" "$cache_data"; do
  if has_idx "$folder"; then
    echo "data: Fashion-MNIST found in $folder"; exit 0
  fi
done
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
                   (or in $cache_data/FashionMNIST/raw, torchvision's layout)
MSG
exit 1
