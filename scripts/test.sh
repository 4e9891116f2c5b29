#!/usr/bin/env bash
# Install everything the tests need on a fresh machine, then run the default test suite.
# torch==2.13.0 first: it is the CPU build (an unpinned torch would pull a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --disable-pip-version-check torch==2.13.0
python -m pip install -q --disable-pip-version-check -e '.[dev]'
python -m pytest -q "$@"
