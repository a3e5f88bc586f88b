#!/usr/bin/env bash
# The demo: a real video, a real pretrained classifier, results per frame in JSON lines.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p out
.venv/bin/python -m scripts.demo "$@"
