#!/usr/bin/env bash
# The quick-start demo: install, build specs/demo.yaml, run the whole pipeline on 2 CPU
# cores, and print where the report is. Rerunning it reruns nothing that is up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
distillc build specs/demo.yaml
time distillc run --cores 2 --profile profiles/local
echo
echo "report: runs/demo/report/report.html  (and report.md)"
sed -n '1,40p' runs/demo/report/report.md
