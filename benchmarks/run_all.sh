#!/usr/bin/env bash
# Every benchmark of issue #6 (and the CUSA step cost, and #14's per-query costs), one after the other, each printing its figures and ratios.
# Run on an otherwise idle machine: on 2 cores a concurrent job skews every timing.
#   bash benchmarks/run_all.sh            # full sizes: about 25 minutes on 2 cores
#   bash benchmarks/run_all.sh --quick    # the scale problem at 1/25 size and a 1-epoch grid: about 9 minutes
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
PY=${PYTHON:-python}
quick=${1:-}
scale_args=(); rerun_args=()
if [[ "$quick" == "--quick" ]]; then scale_args=(--images 20000); rerun_args=(--set train.epochs=1); fi
run() { echo; echo "\$ $*"; "$@"; }
run "$PY" benchmarks/scoring.py
run "$PY" benchmarks/within_modality.py
run "$PY" benchmarks/scale.py "${scale_args[@]}"
run "$PY" benchmarks/encoding.py
run "$PY" benchmarks/rerun.py "${rerun_args[@]}"
run "$PY" benchmarks/cusa_step.py --steps 20
run "$PY" benchmarks/uncertainty.py
