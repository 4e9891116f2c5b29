#!/usr/bin/env bash
# The GPU checks, on a machine with a CUDA GPU (CI has none): versions, tests/test_gpu.py (cuda decode = CPU
# decode; pretrain -> finetune -> train-controller under scripts/accelerate/gpu_1.yaml and fsdp.yaml; a GPU run
# reproducible), then bench_generate on cuda. Logs and JSON go to $OUT (default runs/gpu_check).
# Usage: bash scripts/gpu_check.sh [extra pytest args]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
status=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)" \
    | tee -a "$OUT/gpu.txt"
$PY -m pytest -q -p no:cacheprovider tests/test_gpu.py "$@" 2>&1 | tee "$OUT/test_gpu.log" \
    | tail -25 || status=1
grep -q " passed" "$OUT/test_gpu.log" && ! grep -Eq "[0-9]+ (failed|error)" "$OUT/test_gpu.log" || status=1
$PY benchmarks/bench_generate.py --device cuda --output "$OUT/bench_generate_cuda.json" 2>&1 \
    | tee "$OUT/bench_generate_cuda.log" | tail -12 || status=1
exit $status
