"""rope-eval: did switching the RoPE path change the model?

Kept import-light on purpose: `setup_platform` runs with a bare system Python before
any dependency is installed, and the vLLM plugin is imported in every vLLM process.
"""

__version__ = "0.1.0"
