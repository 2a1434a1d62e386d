#!/usr/bin/env bash
# Train the CamVid models of the INT8 benchmark table (docs/benchmarks.md, issue 4) with edgeseg's own
# trainer, from scratch, on short CPU schedules (these models exist to measure what INT8 costs on
# *trained* weights, not to be shipped; the table's `road` row is `road-camvid` now, with its own recipe in
# tools/train_default.py). One thread each, so it can run next to other work; resumable (re-run it:
# a finished model is skipped, an interrupted one continues from its last.pt).
#
#   bash tools/bench/train_int8_models.sh [RUNS_DIR]      # default runs/int8-bench
#
# Then: python tools/bench/int8.py edgeseg/zoo/road-camvid.edgeseg RUNS_DIR/*.edgeseg --calib camvid \
#           --eval camvid:../shared/data/camvid --targets cpu,tensorrt --threads 1 --json int8.json
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-runs/int8-bench}
DATA=${EDGESEG_DATA:-../shared/data}/camvid
mkdir -p "$RUNS"
export OMP_NUM_THREADS=1
train() {  # name model epochs
  local name=$1 model=$2 epochs=$3
  if [ -f "$RUNS/$name.edgeseg/manifest.json" ]; then echo "$name: done ($RUNS/$name.edgeseg)"; return; fi
  local resume=()
  [ -f "$RUNS/$name/last.pt" ] && resume=(--resume)
  edgeseg train "$model" --data "camvid:$DATA" --epochs "$epochs" --out "$RUNS/$name" --size 480x360 --crop 256x192 \
    --batch 8 --lr 0.05 --weight-decay 4e-5 --warmup 1 --loss "wce+0.5*lovasz" --cache --threads 1 \
    --eval-every 5 --no-progress --export "$RUNS/$name.edgeseg" "${resume[@]}"
}
train fcn8s fcn8s_mobilenetv2 30
train unet unet_small 20
train pspnet pspnet_mobilenetv2 8  # run here: 3 epochs of a 12-epoch schedule, then --resume --epochs 8
