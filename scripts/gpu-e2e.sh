#!/usr/bin/env bash
# End to end on a CUDA GPU: kernel tests compiled for real, the kernel benchmark, and the smoke
# pipeline (configs/gpu-tiny.yaml) against CUDA vLLM under torch.compile + CUDA graphs.
#
# usage: scripts/gpu-e2e.sh OUT_DIR [DATA_DIR]
# Needs torch + Triton with a GPU, and vLLM: either installed, or the cut-down bundle that
# ../shared/gpu-vllm/build.sh makes in .gpu_vllm/ (sourced here when present). Optional wheels
# in .gpuwhl/ (math-verify and its deps, liger-kernel, flashinfer) are installed first.
set -uo pipefail
OUT=${1:?usage: scripts/gpu-e2e.sh OUT_DIR [DATA_DIR]}
DATA=${2:-${ROPE_EVAL_DATA:-../shared/data}}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
RUNS=${GPU_E2E_RUNS:-/tmp/gpu-e2e-runs}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1
if [ -d .gpuwhl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpuwhl .gpuwhl/*.whl
  export PYTHONPATH=/tmp/gpuwhl${PYTHONPATH:+:$PYTHONPATH}
fi
[ -f .gpu_vllm/install.sh ] && source .gpu_vllm/install.sh
# the plugin is found through its entry point, so the package must be installed
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; } | tee "$LOG"

if [ -z "${GPU_E2E_SKIP_KERNELS:-}" ]; then
  echo "== kernel tests, compiled for real" | tee -a "$LOG"
  python3 -m pytest -q -p no:cacheprovider tests/test_kernel_rope.py tests/test_kernel_fused.py \
    tests/test_kernel_errors.py 2>&1 | tail -n 15 | tee -a "$LOG"
  echo "== kernel benchmark" | tee -a "$LOG"
  python3 -m eval_harness.kernels.bench --json "$OUT/bench.json" 2>&1 | tee -a "$LOG"
fi

# One model at a time: two vLLM servers profiling GPU memory at once trip vLLM's start-up check
# ("Error in memory profiling ... other processes ... release GPU memory").
# Every path on qwen3-tiny (the planted bug included); glm4-tiny (partial GPT-J rotary) adds its
# own form for native vs triton. Each server start compiles and captures graphs (about a minute).
for spec in "qwen3-tiny" "glm4-tiny --path triton"; do
  model=${spec%% *}
  echo "== pipeline: configs/gpu-tiny.yaml, $spec" | tee -a "$LOG"
  # shellcheck disable=SC2086
  rope-eval eval configs/gpu-tiny.yaml --model $spec --profile smoke --out "$RUNS" --data-dir "$DATA" \
    --models-dir /tmp/rope-eval-models --policy policies/gpu-bf16.yaml 2>&1 | grep -v '|' | tail -n 100 \
    | tee -a "$LOG"
done
for RUN in "$RUNS"/*/; do
  for only in triton platform; do
    echo "== $(basename "$RUN"): gate --only $only" | tee -a "$LOG"
    rope-eval gate "$RUN" --policy policies/gpu-bf16.yaml --only "$only" 2>&1 | tee -a "$LOG"
    echo "exit ${PIPESTATUS[0]}" | tee -a "$LOG"
  done
  echo "== $(basename "$RUN"): gate, all paths (the planted bug included)" | tee -a "$LOG"
  rope-eval gate "$RUN" --policy policies/gpu-bf16.yaml 2>&1 | tail -n 3 | tee -a "$LOG"
  echo "exit ${PIPESTATUS[0]}" | tee -a "$LOG"
done
tar -czf "$OUT/runs.tgz" -C "$RUNS" .
