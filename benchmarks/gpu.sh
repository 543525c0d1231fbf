#!/usr/bin/env bash
# The GPU benchmark in one device call: each job in its own process under its own deadline, most important first,
# so that a slow or failing job costs only itself and every finished line is kept (the JSONs are rewritten per line).
#
#   OUT=benchmarks/measured/h200 POISONDIFF_DATA=.devdata bash benchmarks/gpu.sh      # BUDGET=540 seconds in all
#
# Env: PY (python, default python3), DEVICE (default cuda), BUDGET (seconds for the whole script), OUT (folder).
set -u
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-540}
OUT=${OUT:-benchmarks/measured}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TQDM_DISABLE=1
start=$(date +%s)
log="$OUT/gpu-log.txt"

step() {  # step NAME SECONDS ARGS...: run benchmarks/run.py ARGS with at most SECONDS (and what is left of BUDGET)
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - ($(date +%s) - start)))
    if ((left < 30)); then
        echo "=== skip $name: ${left} s of the budget left" | tee -a "$log"
        return
    fi
    ((limit > left)) && limit=$left
    echo "=== $name: run.py $* (limit ${limit} s)" | tee -a "$log"
    timeout -k 5 "$limit" "$PY" benchmarks/run.py --device "$DEVICE" --out "$OUT/$name.json" "$@" 2>&1 | tee -a "$log"
    echo "=== $name: exit ${PIPESTATUS[0]} at $(($(date +%s) - start)) s" | tee -a "$log"
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
    "$PY" -c "import torch, poisondiff_lite; print('torch', torch.__version__, '| cuda', torch.cuda.is_available())"
} 2>&1 | tee -a "$log"
step delta 100 --jobs delta,metrics
step train 200 --jobs train
step record 240 --jobs record
step compile 90 --jobs train --models fast --compile
step crafting 90 --jobs gm,validation
echo "=== done at $(($(date +%s) - start)) s" | tee -a "$log"
