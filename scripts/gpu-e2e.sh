#!/usr/bin/env bash
# End to end on CUDA GPUs, as vLLM really serves: bf16, torch.compile and CUDA graphs (no --enforce-eager).
#
# usage: scripts/gpu-e2e.sh OUT_DIR LANE...
# A LANE is one PART or several in quotes ("kernels selftest"): parts of a lane run one after another,
# lanes side by side (a GPU holds several small servers; two GPUs hold more).
#   kernels   the kernel tests compiled for real, and the kernel benchmark (fused against RMSNorm + RoPE)
#   selftest  the planted-bug catalogue in bf16 (every group side by side on one GPU)
#   toy       configs/gpu-tiny.yaml: the trained toy models with the eagle3 draft, reference, A/A, platform
#   tp2 dp2   configs/gpu-tiny-tp2.yaml / -dp2.yaml on two GPUs: the path proven in every rank
#   offline   offline vllm.LLM with ROPE_EVAL_PATH set, fork and spawn (nothing touches CUDA at plugin load)
#   fused     the fused split_qkv_rmsnorm_rope path beside native and triton (configs/gpu-fused.yaml)
# Needs torch + Triton with a GPU, and vLLM: installed, or the cut-down bundle that
# ../shared/gpu-vllm/build.sh makes in .gpu_vllm/ (sourced here when present). Wheels in .gpuwhl/ are
# installed only for modules the machine lacks. Everything that must come back is written under OUT_DIR
# as it goes: PART.log per part and one PART-runs.tgz of its run directories; each part stops itself
# before the machine's per-call limit (PART_TIMEOUT seconds), so what it made is packed and comes back.
set -uo pipefail
OUT=${1:?usage: scripts/gpu-e2e.sh OUT_DIR LANE...}
shift
mkdir -p "$OUT"
RUNS=${GPU_E2E_RUNS:-/tmp/gpu-e2e-runs}
# NVLink multicast stays off in NCCL, PyTorch and NVSHMEM, also in every server's environment (inherited).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 TOKENIZERS_PARALLELISM=false
# TP/DP workers are spawned: the bundle was seen working that way on two GPUs
export VLLM_WORKER_MULTIPROC_METHOD=spawn
[ -f .gpu_vllm/install.sh ] && source .gpu_vllm/install.sh
if [ -d .gpuwhl ]; then
  python3 - <<'EOF'
import importlib.util, pathlib, subprocess, sys, zipfile
missing = []
for whl in sorted(pathlib.Path(".gpuwhl").glob("*.whl")):
    tops = {n.split("/")[0] for n in zipfile.ZipFile(whl).namelist() if not n.split("/")[0].endswith(".dist-info")}
    mods = [t.removesuffix(".py") for t in tops if not t.endswith(".data")]
    if not any(importlib.util.find_spec(m) for m in mods):
        missing.append(str(whl))
if missing:
    print("installing", [pathlib.Path(m).name for m in missing], flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--target", "/tmp/gpuwhl", *missing], check=True)
EOF
  export PYTHONPATH=/tmp/gpuwhl${PYTHONPATH:+:$PYTHONPATH}
fi
# the plugin is found through its entry point, so the package must be installed
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null || exit 1
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, triton, vllm; print('torch', torch.__version__, 'triton', triton.__version__, 'vllm', vllm.__version__)"
} | tee "$OUT/parts.txt"

# Several small servers share a GPU: a fixed KV size skips vLLM's start-up memory profiling, which fails
# when another server allocates at the same moment.
SERVE="--gpu-memory-utilization 0.04 --kv-cache-memory-bytes 2147483648 --attention-backend TRITON_ATTN"
SERVE="$SERVE --max-num-seqs 16 --compilation-config '{\"cudagraph_capture_sizes\":[1,2,4,8,16]}'"

PART_TIMEOUT=${PART_TIMEOUT:-500}

pack() {  # pack PART: its run directories into one file under OUT
  [ -d "$RUNS/$1" ] && tar -czf "$OUT/$1-runs.tgz" -C "$RUNS" "$1"
}

part_kernels() {
  python3 -m pytest -q -p no:cacheprovider tests/test_kernel_rope.py tests/test_kernel_fused.py \
    tests/test_kernel_errors.py 2>&1 | tail -n 15
  python3 -m eval_harness.kernels.bench --json "$OUT/bench.json"
}

part_selftest() {
  # shellcheck disable=SC2086  # SELFTEST_GROUPS: e.g. "--group qwen3 --group glm4-rot96"
  CUDA_VISIBLE_DEVICES=${SELFTEST_GPU:-0} timeout "$PART_TIMEOUT" rope-eval selftest --dtype bfloat16 \
    --serve-args "$SERVE" --parallel-servers "${SELFTEST_SERVERS:-12}" --out "$RUNS/selftest" ${SELFTEST_GROUPS:-}
  pack selftest
}

part_run() {  # part_run NAME CONFIG GPUS SERVERS [rope-eval run options]
  local name=$1 config=$2 gpus=$3 servers=$4
  shift 4
  CUDA_VISIBLE_DEVICES=$gpus timeout "$PART_TIMEOUT" rope-eval run "$config" --profile smoke \
    --out "$RUNS/$name" --parallel-servers "$servers" "$@"
  for run in "$RUNS/$name"/*/; do rope-eval gate "$run" --policy policies/gpu-bf16.yaml; done
  pack "$name"
}

part_offline() {
  python3 -m pytest -q -p no:cacheprovider -rA tests/test_offline_llm.py 2>&1 | tail -n 80
}

run_part() {
  local part=$1
  echo "== $part $(date -u +%T)" >> "$OUT/parts.txt"
  case $part in
    kernels) part_kernels ;;
    selftest) part_selftest ;;
    # shellcheck disable=SC2086  # TOY_MODELS: e.g. "--model qwen3-toy"
    toy) part_run toy configs/gpu-tiny.yaml "${TOY_GPU:-0}" 8 ${TOY_MODELS:-} ;;
    tp2) part_run tp2 configs/gpu-tiny-tp2.yaml 0,1 2 ;;
    dp2) part_run dp2 configs/gpu-tiny-dp2.yaml 0,1 2 ;;
    fused) part_run fused configs/gpu-fused.yaml "${FUSED_GPU:-0}" 4 ;;
    offline) part_offline ;;
    *) echo "unknown part $part" ;;
  esac > "$OUT/$part.log" 2>&1
  echo "== $part done $(date -u +%T), exit $?" >> "$OUT/parts.txt"
}

for lane in "$@"; do
  # shellcheck disable=SC2086  # a lane is a space-separated list of parts
  (for part in $lane; do run_part "$part"; done) &
done
wait
cat "$OUT/parts.txt"
