"""FAKE: stands in for vllm-ascend's `vllm_ascend/ops/__init__.py` (vllm-ascend 0.23).

Like the real package, importing anything under `vllm_ascend.ops` first runs this file, which
imports `register_custom_ops`: the torch op `vllm::npu_rotary_embedding` is bound to
`rope_forward_oot` before any caller of `vllm_ascend.ops.rotary_embedding` gets the module back.
"""

import vllm_ascend.ops.register_custom_ops  # noqa: F401
