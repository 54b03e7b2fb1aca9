"""Build the tiny models: HF checkpoint directories with random weights, in seconds, with no network.

The eagle3 draft is the exception to "random": it is fitted to its target (distill.py) so that its
acceptance depends on its RoPE.

Each directory holds config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
generation_config.json and rope_eval_spec.json (the ModelSpec it was built from, plus the seed); the eagle3
draft adds eagle3_prompts.jsonl. Same seed, same bytes on one machine: run stores key results on these files'
hashes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import (
    AutoModelForCausalLM,
    Glm4Config,
    Glm4MoeConfig,
    LlamaConfig,
    PreTrainedConfig,
    PreTrainedModel,
    Qwen3Config,
)
from transformers.utils import logging as hf_logging

from eval_harness.models import tokenizer as tokmod
from eval_harness.models.distill import DistillReport, distill
from eval_harness.models.specs import (
    BUILD_VERSION,
    EAGLE3_AUX_LAYER_IDS,
    INIT_STD,
    INTERMEDIATE,
    SPECS,
    VOCAB,
    ModelSpec,
)

SPEC_FILE = "rope_eval_spec.json"
PROMPTS_FILE = "eagle3_prompts.jsonl"  # the prompts the draft was fitted on (drafts only)


def _token_ids(tok: Tokenizer) -> dict[str, int]:
    return {
        "eos_token_id": tokmod.token_id(tok, tokmod.IM_END),
        "pad_token_id": tokmod.token_id(tok, tokmod.ENDOFTEXT),
    }


def _rope_parameters(spec: ModelSpec) -> dict[str, Any]:
    params: dict[str, Any] = {"rope_type": "default", "rope_theta": spec.rope_theta}
    if spec.rotary_dim != spec.head_dim:
        params["partial_rotary_factor"] = spec.partial_rotary_factor
    return params


def _common_kwargs(spec: ModelSpec, ids: dict[str, int]) -> dict[str, Any]:
    return {
        "vocab_size": VOCAB,
        "hidden_size": spec.hidden_size,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "head_dim": spec.head_dim,
        "max_position_embeddings": spec.max_position,
        "rope_parameters": _rope_parameters(spec),
        "initializer_range": INIT_STD,
        # Untied: with tied embeddings a random model mostly predicts its input token back.
        "tie_word_embeddings": False,
        "architectures": [spec.architecture],
        "dtype": "float32",
        "bos_token_id": None,
        **ids,
    }


def _hf_config(spec: ModelSpec, ids: dict[str, int]) -> PreTrainedConfig:
    kw = _common_kwargs(spec, ids)
    if spec.architecture == "Qwen3ForCausalLM":
        return Qwen3Config(**kw, rms_norm_eps=1e-6)
    if spec.architecture == "Glm4ForCausalLM":
        # GLM-4-0414 has qkv bias.
        return Glm4Config(**kw, rms_norm_eps=1e-5, attention_bias=True)
    if spec.architecture == "Glm4MoeForCausalLM":
        return Glm4MoeConfig(
            **kw,
            rms_norm_eps=1e-5,
            attention_bias=True,
            use_qk_norm=spec.qk_norm,
            moe_intermediate_size=64,
            n_routed_experts=4,
            num_experts_per_tok=2,
            n_shared_experts=1,
            first_k_dense_replace=1,  # layer 0 dense, layer 1 MoE, as in GLM-4.5
            routed_scaling_factor=2.5,
            n_group=1,
            topk_group=1,
            norm_topk_prob=True,
            num_nextn_predict_layers=0,  # no MTP weights in the checkpoint
        )
    raise ValueError(f"no HF config for {spec.architecture}")


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """save_pretrained draws a shard progress bar; restore whatever the caller had."""
    was_disabled = hf_logging.is_progress_bar_enabled() is False
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if not was_disabled:
            hf_logging.enable_progress_bar()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _add_legacy_rope_keys(config_path: Path, spec: ModelSpec) -> None:
    """transformers 5 writes only `rope_parameters` and `dtype`; transformers 4.x (still pinned by some vLLM
    platforms) reads top-level `rope_theta`, and would silently fall back to 10000, and `torch_dtype`."""
    data = json.loads(config_path.read_text(encoding="utf-8"))
    data["rope_theta"] = spec.rope_theta
    data["torch_dtype"] = data["dtype"]
    if spec.rotary_dim != spec.head_dim:
        data["partial_rotary_factor"] = spec.partial_rotary_factor
    _write_json(config_path, data)


def _hf_model(spec: ModelSpec, seed: int, ids: dict[str, int]) -> PreTrainedModel:
    """The random target model, in memory. The draft's fit rebuilds it here rather than reading it back."""
    config = _hf_config(spec, ids)
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG as it was
        torch.manual_seed(seed + spec.seed_offset)
        return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def _build_hf_model(spec: ModelSpec, out: Path, seed: int, ids: dict[str, int]) -> None:
    model = _hf_model(spec, seed, ids)
    with _quiet_progress():
        model.save_pretrained(out, safe_serialization=True)
    # Replaced below by our own, so that no sampling defaults leak into vLLM's greedy requests.
    (out / "generation_config.json").unlink(missing_ok=True)


def eagle3_config(spec: ModelSpec, target: ModelSpec, ids: dict[str, int]) -> dict[str, Any]:
    """The layout vLLM's LlamaForCausalLMEagle3 loads, with the draft's own rope_theta.

    The aux layer ids go both at the top level and in `eagle_config`: vLLM 0.26's v2 model runner reads only
    the top-level key (else it falls back to (2, L//2, L-3), two states for 2 layers, and the draft's fc then
    fails on the shape), while the draft model itself sizes fc from `eagle_config`. Shared with the trained
    toy draft (eval_harness/toy/train.py), so both carry the same keys."""
    config = LlamaConfig(**_common_kwargs(spec, ids), rms_norm_eps=1e-6).to_diff_dict()
    layer_ids = list(EAGLE3_AUX_LAYER_IDS)
    config.update(
        {
            "draft_vocab_size": VOCAB,  # full vocab: no d2t/t2d mapping needed
            "target_hidden_size": target.hidden_size,
            "eagle_aux_hidden_state_layer_ids": layer_ids,
            "eagle_config": {"eagle_aux_hidden_state_layer_ids": layer_ids, "use_aux_hidden_state": True},
        }
    )
    return config


def _eagle3_weights(spec: ModelSpec, seed: int) -> dict[str, torch.Tensor]:
    """Weights named as vLLM's llama_eagle3.py loads them. No embed_tokens: vLLM then shares the target's."""
    target = SPECS[spec.target or ""]
    h, q, kv = spec.hidden_size, spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    gen = torch.Generator().manual_seed(seed + spec.seed_offset)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * INIT_STD

    ones = torch.ones(h)
    return {
        "fc.weight": rand(h, target.hidden_size * len(EAGLE3_AUX_LAYER_IDS)),
        # Layer 0 attends over [embeds, hidden] concatenated: 2*h inputs.
        "midlayer.self_attn.q_proj.weight": rand(q, 2 * h),
        "midlayer.self_attn.k_proj.weight": rand(kv, 2 * h),
        "midlayer.self_attn.v_proj.weight": rand(kv, 2 * h),
        "midlayer.self_attn.o_proj.weight": rand(h, q),
        "midlayer.mlp.gate_proj.weight": rand(INTERMEDIATE, h),
        "midlayer.mlp.up_proj.weight": rand(INTERMEDIATE, h),
        "midlayer.mlp.down_proj.weight": rand(h, INTERMEDIATE),
        "midlayer.input_layernorm.weight": ones.clone(),
        "midlayer.hidden_norm.weight": ones.clone(),
        "midlayer.post_attention_layernorm.weight": ones.clone(),
        "norm.weight": ones.clone(),
        "lm_head.weight": rand(VOCAB, h),
    }


def _build_eagle3(
    spec: ModelSpec, out: Path, seed: int, ids: dict[str, int], tok: Tokenizer, fit: bool
) -> dict[str, Any]:
    """Write the draft; returns what to record in its spec file."""
    weights = _eagle3_weights(spec, seed)
    extra: dict[str, Any] = {"distilled": fit}
    if fit:
        target_spec = SPECS[spec.target or ""]
        target = _hf_model(target_spec, seed, ids)
        weights, report = distill(weights, target, spec, target_spec.rope_theta, tok, set(ids.values()))
        _write_prompts(out / PROMPTS_FILE, tok, report)
        extra.update(
            prompts_file=PROMPTS_FILE,
            train_accuracy=report.train_accuracy,
            fit_iterations=report.iterations,
            wrong_theta_accuracy=report.wrong_theta_accuracy,
        )
    _write_json(out / "config.json", eagle3_config(spec, SPECS[spec.target or ""], ids))
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    return extra


def _write_prompts(path: Path, tok: Tokenizer, report: DistillReport) -> None:
    rows = [
        {"prompt": tok.decode(p), "prompt_token_ids": p, "target_greedy_token_ids": c}
        for p, c in zip(report.prompts, report.continuations, strict=True)
    ]
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8")


def _write_generation_config(out: Path, ids: dict[str, int]) -> None:
    # Both end tokens stop generation, as in Qwen3. Nothing else: vLLM would take sampling fields as defaults.
    eos = [ids["eos_token_id"], ids["pad_token_id"]]
    _write_json(out / "generation_config.json", {"eos_token_id": eos, "pad_token_id": ids["pad_token_id"]})


def _write_spec(out: Path, spec: ModelSpec, seed: int, extra: dict[str, Any]) -> None:
    _write_json(out / SPEC_FILE, {**asdict(spec), "seed": seed, "build_version": BUILD_VERSION, **extra})


def _replace_dir(tmp: Path, final: Path) -> None:
    """Swap the finished build in, so a failed build never leaves a half-written model behind."""
    if final.exists():
        if not (final / SPEC_FILE).exists():
            raise FileExistsError(f"{final} exists and is not a rope-eval tiny model; not replacing it")
        shutil.rmtree(final)
    tmp.rename(final)


def build_model(name: str, out_dir: Path, seed: int = 0, distill_draft: bool = True) -> Path:
    """Build one tiny model into out_dir/name (replacing an earlier build) and return that path.

    distill_draft: fit an eagle3 draft to its target (about 5 s on one core; see distill.py). Without it the
    draft stays random and is accepted almost never."""
    if name not in SPECS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(SPECS)}")
    spec = SPECS[name]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / name
    tmp = out_dir / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tok = tokmod.save_tokenizer(tmp)
        ids = _token_ids(tok)
        extra: dict[str, Any] = {}
        if spec.target is None:
            _build_hf_model(spec, tmp, seed, ids)
        else:
            extra = _build_eagle3(spec, tmp, seed, ids, tok, distill_draft)
        _add_legacy_rope_keys(tmp / "config.json", spec)
        _write_generation_config(tmp, ids)
        _write_spec(tmp, spec, seed, extra)
        for path in tmp.iterdir():
            path.chmod(0o644)  # safetensors writes 0600; a server under another user must read it
        _replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def build_all(out_dir: Path, seed: int = 0, distill_draft: bool = True) -> dict[str, Path]:
    """Build every model in SPECS; returns name -> checkpoint directory."""
    return {name: build_model(name, out_dir, seed, distill_draft) for name in SPECS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rope-eval models build", description=__doc__)
    parser.add_argument("out_dir", type=Path, help="directory to build into (one subdirectory per model)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument(
        "--model", action="append", choices=sorted(SPECS), help="build only these (repeatable)"
    )
    parser.add_argument("--random-draft", action="store_true", help="skip fitting the eagle3 draft (faster)")
    args = parser.parse_args(argv)
    for name in args.model or list(SPECS):
        start = time.perf_counter()
        path = build_model(name, args.out_dir, args.seed, not args.random_draft)
        size = sum(f.stat().st_size for f in path.iterdir()) / 1e6
        print(f"{name}: {path} ({size:.1f} MB, {time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
