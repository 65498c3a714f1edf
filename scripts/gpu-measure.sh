#!/usr/bin/env bash
# The GPU measurements of docs/performance.md, in one command (run from the repo root on a
# CUDA machine). Offline machines: put lightly/kornia/timm wheels in .whl/ and the
# Fashion-MNIST IDX files in .data/fashion-mnist/. Writes logs and JSON under ${OUT:-gpu-out}.
# Usage: bash scripts/gpu-measure.sh [smoke|epochs|loops|eval|all]...
set -uo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
# Time limit of each Python process (the limit must sit on the process itself: a timeout around
# this script would leave the Python children running and loading the machine).
T=${T:-540}
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
DATA=(); [ -d .data ] && DATA=(--data-dir .data)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, timm, kornia, lightly; print('torch', torch.__version__, 'timm', timm.__version__, 'kornia', kornia.__version__, 'lightly', lightly.__version__)" | tee -a "$OUT/device.txt"
for part in "${@:-all}"; do
  case $part in
  smoke|all)  # every method end to end through the CUDA path (bf16, channels_last)
    timeout -k 5 "$T" python3 -m bench run --suite quick --device cuda --epochs 1 --out "$OUT/quick-cuda" 2>&1 | grep -v "it/s" | tee "$OUT/smoke.log" | tail -25 ;;&
  epochs|all)  # epoch time of every method at cifar10-all shapes (synthetic 50k x 32px uint8)
    timeout -k 5 "$T" python3 -m bench perf --suite cifar10-all --all-methods --synthetic --device cuda --steps 40 --repeats 3 \
      --json "$OUT/epochs.json" 2>&1 | tee "$OUT/epochs.log" | tail -30 ;;&
  loops|all)  # (a)/(b)/(c) for SimCLR at cifar10-all shapes; plain loop with 2 and 8 workers
    for w in ${WORKERS:-2 8}; do
      timeout -k 5 "$T" python3 -m bench perf --suite cifar10-all --method simclr --vs-lightly --workers $w --synthetic --device cuda \
        --steps 30 --repeats 3 --no-eval --json "$OUT/loops-w$w.json" 2>&1 | tee "$OUT/loops-w$w.log" | tail -20
    done ;;&
  eval|all)  # linear probe (with its search) vs scikit-learn, kNN vs matmul+topk, on fmnist-ci features
    timeout -k 5 "$T" python3 -m bench perf --suite fmnist-ci --no-loops --device cuda "${DATA[@]}" --json "$OUT/eval.json" 2>&1 \
      | tee "$OUT/eval.log" | tail -20 ;;
  esac
done
