"""What each tiny model is, in particular its RoPE form. Import-light: no torch, no transformers.

The tiny models stand in for the three RoPE forms (Qwen3, GLM-4-0414, GLM-4.5) plus an eagle3 draft whose
rope_theta differs from its target's. Tests read `SPECS` to know what a model's RoPE should look like; the
builder reads it to make the checkpoints, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# Bump when a build's bytes change (weights, tokenizer, configs, draft fit), so cached builds can be redone.
BUILD_VERSION = 2  # 2: the draft's aux layer ids also at the config's top level (vLLM 0.26)

# Shared tiny dimensions. head_dim stays at the real 128 (the RoPE kernels' main case); everything else is
# shrunk. 4 query heads over 2 KV heads keeps GQA, so q and k reach the RoPE op with different head counts.
HIDDEN = 128
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 128
INTERMEDIATE = 384
LAYERS = 2
VOCAB = 1024  # equals the tokenizer's size, so every id the model can emit decodes
# Wider than transformers' default 0.02, so greedy output varies with context instead of repeating one token.
INIT_STD = 0.1


@dataclass(frozen=True)
class ModelSpec:
    name: str
    architecture: str
    head_dim: int
    rotary_dim: int
    is_neox: bool  # True: rotate halves (neox); False: rotate interleaved pairs (GPT-J)
    rope_theta: float
    max_position: int  # max_position_embeddings: the size of vLLM's cos/sin cache
    num_layers: int = LAYERS
    hidden_size: int = HIDDEN
    num_heads: int = HEADS
    num_kv_heads: int = KV_HEADS
    qk_norm: bool = False  # RMSNorm on q and k before RoPE
    moe: bool = False
    target: str | None = None  # eagle3 drafts: the target model's name
    seed_offset: int = 0  # keeps the models' weights independent under one build seed

    @property
    def partial_rotary_factor(self) -> float:
        return self.rotary_dim / self.head_dim


SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        # Qwen3: full rotary, neox, QK RMSNorm, theta 1e6, 40960 positions.
        ModelSpec(
            name="qwen3-tiny",
            architecture="Qwen3ForCausalLM",
            head_dim=HEAD_DIM,
            rotary_dim=HEAD_DIM,
            is_neox=True,
            rope_theta=1_000_000.0,
            max_position=40960,
            qk_norm=True,
            seed_offset=0,
        ),
        # GLM-4-0414: half rotary (64 of 128) in GPT-J interleaved style; vLLM's glm4.py hard-codes
        # is_neox_style=False. The form a neox-only partial-rotary kernel breaks.
        ModelSpec(
            name="glm4-tiny",
            architecture="Glm4ForCausalLM",
            head_dim=HEAD_DIM,
            rotary_dim=HEAD_DIM // 2,
            is_neox=False,
            rope_theta=10_000.0,
            max_position=32768,
            seed_offset=1,
        ),
        # GLM-4.5/4.6/4.7: half rotary in neox style, QK norm on, MoE after a first dense layer.
        ModelSpec(
            name="glm45-tiny",
            architecture="Glm4MoeForCausalLM",
            head_dim=HEAD_DIM,
            rotary_dim=HEAD_DIM // 2,
            is_neox=True,
            rope_theta=1_000_000.0,
            max_position=131072,
            qk_norm=True,
            moe=True,
            seed_offset=2,
        ),
        # GLM-4-0414 form with a rotary dim that is not a power of two (96 of 128): where a kernel that
        # pads rot_dim/2 to a power of two reads sin at the wrong offset.
        ModelSpec(
            name="glm4-tiny-rot96",
            architecture="Glm4ForCausalLM",
            head_dim=HEAD_DIM,
            rotary_dim=96,
            is_neox=False,
            rope_theta=10_000.0,
            max_position=32768,
            seed_offset=4,
        ),
        # eagle3 draft for qwen3-tiny, with its own theta: a draft served with its target's cos/sin cache
        # changes its proposals, which is the bug class this model exists to expose.
        ModelSpec(
            name="qwen3-tiny-eagle3",
            architecture="LlamaForCausalLMEagle3",
            head_dim=HEAD_DIM,
            rotary_dim=HEAD_DIM,
            is_neox=True,
            rope_theta=10_000.0,
            max_position=40960,
            num_layers=1,
            target="qwen3-tiny",
            seed_offset=3,
        ),
    )
}

# Target hidden states the draft reads (vLLM: id k = the residual stream entering layer k; LAYERS = the last
# layer's output). Three, as in real eagle3 drafts; the defaults (2, L//2, L-3) are invalid for 2 layers.
EAGLE3_AUX_LAYER_IDS: tuple[int, ...] = (0, LAYERS // 2, LAYERS)

# Trained on toy-arith by eval_harness/toy/train.py, weights committed under eval_harness/toy/weights/,
# so that L3 accuracy and eagle3 acceptance carry signal where no real checkpoint exists. Same shapes and
# RoPE forms as their tiny counterparts; only the weights differ. Kept out of SPECS: the random-weight
# builder never makes them.
TOY_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        replace(SPECS["qwen3-tiny"], name="qwen3-toy"),
        replace(SPECS["glm4-tiny"], name="glm4-toy"),
        replace(SPECS["qwen3-tiny-eagle3"], name="qwen3-toy-eagle3", target="qwen3-toy"),
    )
}
