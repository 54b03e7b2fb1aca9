"""FAKE: stands in for vllm-ascend, which needs Ascend hardware; only for tests/test_ascend_switch.py.

It holds the few modules rope-eval's plugin touches (`vllm_ascend.ops.rotary_embedding` and the
import-time op registration in `vllm_ascend.ops.register_custom_ops`), computing with torch on the
CPU. It is put on PYTHONPATH of a test subprocess only; nothing installs it.
"""
