#!/usr/bin/env bash
# Install on a fresh machine, then run the main job on the embedded default (no model download).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --disable-pip-version-check torch==2.13.0
python -m pip install -q --disable-pip-version-check -e .
adaptive-pause demo "$@"
