#!/usr/bin/env bash
# The test suite, from a fresh machine: install the project, the browser the report
# test uses, then run pytest (extra arguments go to pytest).
#   bash scripts/test.sh --fast   the fast tier: no training, no Snakemake or lm-eval run (under a minute)
#   bash scripts/test.sh          everything (CI): the fast tier and the tests marked slow (~20 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
fast=0
if [ "${1:-}" = "--fast" ]; then fast=1; shift; fi
bash scripts/setup.sh test,slurm     # the SLURM tests need the executor plugin
if [ $fast = 0 ] && ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "note: could not install chromium; the report's browser test will be skipped"
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
# Models made once (the real test model dequantised from its GGUF file, ~1.5 min): kept between
# runs in a gitignored folder of the repo, so a CI run (and every later local run) makes it once.
export DISTILLC_CACHE="${DISTILLC_CACHE:-$PWD/.cache/distillc}"
# Lint, format and types first (pyproject.toml configures them): seconds, and they fail before any test runs.
.venv/bin/ruff check compiler runtime
.venv/bin/ruff format --check compiler runtime tests benchmarks
.venv/bin/mypy
if [ $fast = 1 ]; then
  exec .venv/bin/python -m pytest -q -n 2 -m "not slow" "$@"
fi
# Two workers, one test file each at a time: the SLURM tests mostly wait on the scheduler,
# so the other worker's tests run in those gaps (about half the wall time of one worker).
# The slowest files first, in conftest's order (SLOWEST_FIRST), not xdist's (most tests first).
exec .venv/bin/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder "$@"
