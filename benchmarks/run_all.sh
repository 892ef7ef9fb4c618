#!/usr/bin/env bash
# Every benchmark (#6, the CUSA step cost, #14's per-query costs, #15's containers, #17's SOP size and end-to-end
# throughput, sharded evaluation), one after the other, each printing its figures and ratios.
# Run on an otherwise idle machine: on 2 cores a concurrent job skews every timing.
#   bash benchmarks/run_all.sh            # full sizes: about 35 minutes on 2 cores
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
run "$PY" benchmarks/within_modality.py --sop
run "$PY" benchmarks/containers.py --repeat 30 --workers 0 2
run "$PY" benchmarks/fingerprint_cost.py
run "$PY" benchmarks/results_store.py
run "$PY" benchmarks/train_throughput.py --captions 192 --epochs 1 --workers 2
if sinfo >/dev/null 2>&1; then run "$PY" benchmarks/sharded.py; else run "$PY" benchmarks/sharded.py --rates-only; fi
