"""FAKE: stands in for vllm-ascend's `vllm_ascend/ops/register_custom_ops.py` (vllm-ascend 0.23).

The real module does `from vllm_ascend.ops.rotary_embedding import rope_forward_oot` and registers
that function object as the kernel of `torch.ops.vllm.npu_rotary_embedding`, which
`AscendRotaryEmbedding.forward_oot` calls. The binding happens at import, so replacing the module
attribute afterwards does not change what the op runs. This fake reproduces that binding with
torch.library directly (vLLM's `direct_register_custom_op` does the same define + impl). The real
kernel is registered for "PrivateUse1", the NPU dispatch key; the fake's tensors are on the CPU.
"""

import torch

from vllm_ascend.ops.rotary_embedding import rope_forward_oot

DISPATCH_KEY = "CPU"
# The schema vLLM's direct_register_custom_op infers from the function (mutates_args=[] as in the real call)
SCHEMA = torch.library.infer_schema(rope_forward_oot, mutates_args=())
_LIB = torch.library.Library("vllm", "FRAGMENT")  # module global: the op lives as long as it does
_LIB.define("npu_rotary_embedding" + SCHEMA)
_LIB.impl("npu_rotary_embedding", rope_forward_oot, DISPATCH_KEY)
