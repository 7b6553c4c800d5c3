#!/usr/bin/env bash
# The GPU checks of issue 14, for the lent H200 machine (one GPU, no network, a 10-minute limit per
# call, 15 minutes of device time in all). NOT YET RUN: no GPU was lent when it was written.
#
#   here:  bash scripts/gpu_wheels.sh             # .whl/: what the machine's image lacks (52 MB)
#   there: COMMIT=<sha> bash scripts/gpu_check.sh checks     # ~3 min: GPU tests, the benchmark
#   there: COMMIT=<sha> bash scripts/gpu_check.sh pipeline   # <= 9 min: specs/gpu.yaml end to end
# (each call with carry: [".whl"]). Results land in $OUT (the device call's folder that comes
# back) or docs/results/: commit them under docs/results/ with the hardware, commit and date they hold.
# vLLM runs only where `import vllm` works: its 313 MB wheel (pinning torch 2.13.0) cannot be carried.
set -uo pipefail
cd "$(dirname "$0")/.."
STEP=${1:-all}
RES=${OUT:-docs/results}
mkdir -p "$RES"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
LOG=$RES/gpu-check-$STEP.txt
{
  echo "distillc GPU check ($STEP): commit ${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}, $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, transformers, trl, lm_eval, snakemake; print('python', sys.version.split()[0],
    '| torch', torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__,
    '| lm_eval', lm_eval.__version__, '| snakemake', snakemake.__version__)" \
    || { echo "missing packages: run scripts/gpu_wheels.sh here and carry .whl"; exit 3; }
} 2>&1 | tee "$LOG" || exit 3
ENGINE=hf
python3 -c "import vllm; print('vllm', vllm.__version__)" >>"$LOG" 2>&1 && ENGINE=all \
  || echo "vllm: not installed, so the vLLM half does not run" | tee -a "$LOG"

if [ "$STEP" != pipeline ]; then
  timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tee -a "$LOG"
  # the spec's teacher (~197M params, bf16), 512 questions x 4 samples, the stage's own settings
  timeout 240 python3 benchmarks/generation.py --spec specs/gpu.yaml --model teacher_base --engine $ENGINE \
    --questions 512 --samples 4 --max-new-tokens 64 --batch-size 256 --repeats 2 \
    --json "$RES/gpu-generation.json" 2>&1 | tee "$RES/gpu-generation.txt"
fi
if [ "$STEP" != checks ]; then
  python3 -m compiler.cli build specs/gpu.yaml | tee -a "$LOG"
  start=$(date +%s)
  timeout 510 python3 -m snakemake --cores 16 --resources gpus=1 --rerun-incomplete >"$RES/gpu-snakemake.log" 2>&1
  echo "specs/gpu.yaml: exit $? after $(( $(date +%s) - start )) s (target: under 480 s)" | tee -a "$LOG"
  for f in runs/gpu/benchmarks/*.tsv; do   # Snakemake's per-stage benchmark: first column, seconds
    [ -f "$f" ] && echo "  $(basename "$f" .tsv): $(tail -n 1 "$f" | cut -f 1) s"
  done | tee -a "$LOG"
  cp runs/gpu/report/report.md "$RES/gpu-report.md" 2>/dev/null
  cp runs/gpu/report/summary.json "$RES/gpu-summary.json" 2>/dev/null
fi
true
