#!/bin/bash
# Issue 10's "model imported from elsewhere": an ESPNet-like network (tools/bench/int8_profile.py
# build_espnet: 20 PReLU, dilated ESP blocks, 3 ConvTranspose; random weights, latency only) exported
# with torch's legacy TorchScript exporter at opset 13, brought in with `edgeseg import`, then given
# INT8 models for the cpu target (ORT Q/DQ) and the openvino target (NNCF).
#   bash tools/bench/espnet_import.sh OUT_DIR [DATA_ROOT]     -> OUT_DIR/espnet.edgeseg
# then: python tools/bench/choice.py road shapes OUT_DIR/espnet.edgeseg --threads 0 --threads 1 --rounds 30
set -euo pipefail
OUT=${1:?usage: espnet_import.sh OUT_DIR [DATA_ROOT]}
DATA=${2:-${EDGESEG_DATA:-$(dirname "$0")/../../../shared/data}}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DATA=$(cd "$DATA" && pwd)
PY=${PY:-$REPO/.venv/bin/python}
cd "$REPO"
"$PY" - "$OUT/espnet.onnx" <<'PY'
import sys
from pathlib import Path
import torch
sys.path.insert(0, str(Path("tools/bench").resolve()))
from int8_profile import build_espnet
torch.onnx.export(build_espnet(classes=11), (torch.zeros(1, 3, 360, 480),), sys.argv[1], dynamo=False, opset_version=13,
                  input_names=["input"], output_names=["logits"])
PY
"$PY" -m edgeseg import "$OUT/espnet.onnx" --out "$OUT/espnet.edgeseg" --classes camvid --overwrite
for target in cpu "openvino --engine nncf"; do
  # shellcheck disable=SC2086
  "$PY" -m edgeseg quantize "$OUT/espnet.edgeseg" --calib "camvid:$DATA/camvid" --target $target --frames 64 \
    --eval "camvid:$DATA/camvid" --max-drop 1.0
done
