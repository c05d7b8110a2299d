#!/usr/bin/env bash
# Make sure Fashion-MNIST is where the pipeline and the tests look for it (tasks/settings.py), the
# same way for `make run` and `make test`: MLOPS_DATA_DIR if set; else ../shared/data/fashion-mnist
# beside the checkout; else Debian's dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist),
# installed here when this user may (root with apt-get). Otherwise one message saying what to do.
set -euo pipefail
cd "$(dirname "$0")/.."

FILES="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
DEBIAN_DIR=/usr/share/datasets/fashion-mnist

complete() {
  for file in $FILES; do [ -f "$1/$file" ] || return 1; done
}

if [ -n "${MLOPS_DATA_DIR:-}" ]; then
  complete "$MLOPS_DATA_DIR" && exit 0
  echo "[data] MLOPS_DATA_DIR=$MLOPS_DATA_DIR lacks some of: $FILES" >&2; exit 1
fi
for dir in ../shared/data/fashion-mnist "$DEBIAN_DIR"; do
  if complete "$dir"; then echo "[data] Fashion-MNIST in $dir" >&2; exit 0; fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "[data] installing Debian's dataset-fashion-mnist" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  complete "$DEBIAN_DIR" && { echo "[data] Fashion-MNIST in $DEBIAN_DIR" >&2; exit 0; }
fi
echo "[data] Fashion-MNIST not found: set MLOPS_DATA_DIR to a directory with $FILES," >&2
echo "[data] or install Debian's dataset-fashion-mnist (sudo apt-get install dataset-fashion-mnist)" >&2
exit 1
