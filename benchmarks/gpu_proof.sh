#!/usr/bin/env bash
# The GPU proof, in one go (<= 8 minutes on a GPU machine with PyTorch; TensorRT optional):
#   1. tests/gpu (the GPU twins of the suite), junit XML kept;
#   2. every sparse layer shape of the examples, ResNet-50 and BERT-base (benchmarks/gpu_shapes.json) as a
#      2:4 semi-structured matmul against the dense one, fp16 and int8 -> benchmarks/runs/gpu_proof/gpu_proof.json;
#   3. where TensorRT imports: the example engine's real inspector JSON and build log -> $OUT/samples/.
# Then, anywhere: python -m benchmarks.gpu_proof --write   (the RESULTS.md section)
#
#   bash benchmarks/gpu_proof.sh             # on the GPU machine
#   bash benchmarks/gpu_proof.sh --dry-run   # on a CPU: every step but the timing
# OUT=folder puts the JSON, logs and samples there (default benchmarks/runs/gpu_proof).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-benchmarks/runs/gpu_proof}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
began=$(date +%s)
status=0

if [ "$DRY" = 1 ]; then
  echo "== dry run: collecting tests/gpu (they run only on a GPU)"
  timeout 120 "$PY" -m pytest -q -p no:cacheprovider --collect-only tests/gpu >"$OUT/gpu-tests.log" 2>&1 || status=1
  tail -1 "$OUT/gpu-tests.log"
  echo "== dry run: the timing path on the CPU"
  timeout 300 "$PY" -m benchmarks.gpu_proof --dry-run --out "$OUT/dry_run.json" || status=1
else
  echo "== tests/gpu"
  timeout 300 "$PY" -m pytest -q -p no:cacheprovider tests/gpu -m gpu --junitxml "$OUT/gpu-tests.xml" \
    >"$OUT/gpu-tests.log" 2>&1 || status=1
  tail -3 "$OUT/gpu-tests.log"
  echo "== 2:4 semi-structured matmuls against dense"
  timeout 150 "$PY" -m benchmarks.gpu_proof --run --budget 100 --tests "$OUT/gpu-tests.xml" \
    --out "$OUT/gpu_proof.json" || status=1
fi

if "$PY" -c "import tensorrt" 2>/dev/null; then
  echo "== TensorRT: inspector and build-log samples"
  if [ "$DRY" = 1 ]; then
    echo "(dry run: skipped)"
  else
    timeout 120 "$PY" -m benchmarks.gpu_proof --trt-samples "$OUT/samples" || status=1
  fi
else
  echo "== TensorRT not importable: no engine samples"
fi
echo "== done in $(( $(date +%s) - began )) s (status $status)"
exit $status
