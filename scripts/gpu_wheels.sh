#!/usr/bin/env bash
# Run HERE (a machine with pip access), before scripts/gpu_check.sh runs on the lent GPU machine,
# which cannot download: fills .whl/ (git-ignored) with scripts/gpu_wheels.txt for Python 3.12.
# Pass `.whl` in the device call's `carry`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p .whl
grep -v '^#' scripts/gpu_wheels.txt | grep -v '^sdist:' | xargs "$PY" -m pip download -q --no-deps \
  --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl
sed -n 's/^sdist: //p' scripts/gpu_wheels.txt | xargs "$PY" -m pip wheel -q --no-deps -w .whl
echo "$(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl/"
