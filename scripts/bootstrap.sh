#!/usr/bin/env bash
# Create ./.venv with claver installed (CPU torch first: any other torch spec may pull CUDA wheels).
# Usage: bash scripts/bootstrap.sh [extras]   e.g. "test"
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
if [ -n "$extras" ]; then
  .venv/bin/python -m pip install -q -e ".[$extras]"
else
  .venv/bin/python -m pip install -q -e .
fi
# The browser test of `claver serve` (tests/test_serve.py) drives Debian's Chromium with
# Selenium: install it with the test extras when missing and apt-get can be used (root).
if [[ ",$extras," == *",test,"* ]] && ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing Debian's chromium + chromium-driver for the browser test"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        chromium chromium-driver >/dev/null; }; then
      echo "bootstrap: could not install chromium; the browser test will be skipped"
    fi
  else
    echo "bootstrap: no chromium-driver and no root apt-get; the browser test will be skipped"
  fi
fi
