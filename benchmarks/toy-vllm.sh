#!/usr/bin/env bash
# The toy models through real vLLM (CPU), one offline engine per (model, draft, path), appended to OUT:
# native, triton and planted RoPE bugs on the toy-arith test split. Summarise with
#   .venv/bin/python -m eval_harness.toy.compare OUT
# Usage: benchmarks/toy-vllm.sh OUT [LIMIT]   (from the repository root, after `make setup`)
set -euo pipefail
OUT=${1:?usage: benchmarks/toy-vllm.sh OUT [LIMIT]}
LIMIT=${2:-300}
BUGS=eval_harness.selftest.bugs
export VLLM_CPU_KVCACHE_SPACE=1 HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1

run() {  # run PATH MODEL [DRAFT]
    local path=$1 model=$2 draft=${3:-}
    local interpret=0  # as the harness's servers: Triton runs on the CPU only interpreted
    [[ $path == native ]] || interpret=1
    echo "== $model ${draft:++ $draft} $path" >&2
    TRITON_INTERPRET=$interpret ROPE_EVAL_PATH=$path .venv/bin/python -m eval_harness.toy.verify --model "$model" \
        ${draft:+--draft "$draft"} --limit "$LIMIT" --max-tokens 64 --out "$OUT"
}

for path in native triton "custom:$BUGS:draft_uses_target_cache"; do
    run "$path" qwen3-toy qwen3-toy-eagle3
done
for model in qwen3-toy glm4-toy; do
    for path in native triton "custom:$BUGS:key_off_by_one" "custom:$BUGS:style_swapped"; do
        run "$path" "$model"
    done
done
