#!/usr/bin/env bash
# Set up everything edgeseg needs on a fresh Debian 12 machine, idempotently:
#   1. Debian packages: GStreamer 1.22 (+ RTSP server, libav, x264), headers PyGObject builds against.
#   2. A virtual environment in .venv with torch==2.13.0 (CPU wheel) installed *first*, so that
#      nothing later pulls the multi-GB CUDA build of torch.
#   3. edgeseg itself, editable, with the extras named in EDGESEG_EXTRAS (default: all that run here).
# Re-running is cheap: each step is skipped when its inputs have not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${EDGESEG_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}
EXTRAS=${EDGESEG_EXTRAS:-torch,gst,openvino,serve,dev}
log() { printf '[setup] %s\n' "$*"; }

APT_PKGS=(
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-rtsp gir1.2-gstreamer-1.0
  gir1.2-gst-plugins-base-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-python3-plugin-loader
  libgirepository1.0-dev libcairo2-dev pkg-config
)
if command -v apt-get >/dev/null && [ "${EDGESEG_SKIP_APT:-0}" != 1 ]; then
  missing=()
  for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    log "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
stamp="$VENV/.edgeseg-setup"
want=$(cat pyproject.toml tools/setup.sh | sha256sum | cut -c1-16)-$EXTRAS
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  log "environment up to date ($VENV)"
  exit 0
fi
"$VPY" -m pip install -q --upgrade pip
if [[ ",$EXTRAS," == *",torch,"* ]]; then
  log "installing torch==2.13.0 (CPU)"
  "$VPY" -m pip install -q "torch==2.13.0"
fi
log "installing edgeseg[$EXTRAS]"
"$VPY" -m pip install -q -e ".[$EXTRAS]"
if [[ ",$EXTRAS," == *",dev,"* ]]; then
  # the panoptic reference without its requirements (they include the `typing` backport, which breaks
  # GStreamer's embedded Python; pillow and pyquaternion, what it imports, come with the dev extra)
  log "installing cityscapesscripts (panoptic reference, --no-deps)"
  "$VPY" -m pip install -q --no-deps "cityscapesscripts>=2.3"
  "$VPY" -m pip uninstall -q -y typing 2>/dev/null || true
fi
echo "$want" > "$stamp"
log "done: activate with 'source $VENV/bin/activate' or call $VENV/bin/edgeseg"
