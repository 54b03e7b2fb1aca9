"""The committed toy models (eval_harness/toy/weights/) are what train.py's config describes: architecture,
RoPE form, tokenizer, eagle3 layout with its own theta, and the sha256s recorded in TRAINING.md. No vLLM."""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from eval_harness.model_source import resolve_model
from eval_harness.models import tokenizer as tokmod
from eval_harness.models.builder import SPEC_FILE
from eval_harness.models.specs import EAGLE3_AUX_LAYER_IDS, TOY_SPECS, VOCAB, ModelSpec
from eval_harness.suites import ModelOutput, get_suite
from eval_harness.toy import WEIGHTS_DIR, weights_dir
from eval_harness.toy.train import CHECKPOINT_FILES, sha256

TARGETS = [name for name, spec in TOY_SPECS.items() if spec.target is None]
DRAFTS = [name for name, spec in TOY_SPECS.items() if spec.target is not None]
MAX_BYTES = 8e6  # they live in git


def _record(name: str) -> dict:
    return json.loads((weights_dir(name) / SPEC_FILE).read_text())


def _rotated_dims(model: PreTrainedModel, spec: ModelSpec, dim: int) -> set[int]:
    """The dims a unit vector on `dim` lands on under the model's own RoPE at position 1 (neox pairs i with
    i + rot/2, GPT-J pairs 2i with 2i + 1; dims past the rotary part stay put)."""
    modeling = sys.modules[type(model).__module__]
    x = torch.zeros(1, 1, 1, spec.head_dim)
    x[..., dim] = 1.0
    cos, sin = model.model.rotary_emb(x, torch.tensor([[1]]))
    q, _ = modeling.apply_rotary_pos_emb(x, x, cos, sin)
    return set(torch.nonzero(q[0, 0, 0]).flatten().tolist())


@pytest.mark.parametrize("name", list(TOY_SPECS))
def test_files_sizes_and_record(name: str) -> None:
    path = weights_dir(name)
    for file in (*CHECKPOINT_FILES, "generation_config.json", SPEC_FILE):
        assert (path / file).is_file(), f"{name}: {file} missing"
    assert (path / "model.safetensors").stat().st_size < MAX_BYTES
    rec = _record(name)
    spec_fields = {k: rec[k] for k in TOY_SPECS[name].__dataclass_fields__}
    assert spec_fields == TOY_SPECS[name].__dict__, "the record's spec differs from TOY_SPECS"
    assert rec["trained_on"] == "toy-arith" and isinstance(rec["seed"], int)
    assert rec["command"].startswith("python -m eval_harness.toy.train ")
    assert resolve_model(f"builtin:{name}") == str(path)


@pytest.mark.parametrize("name", TARGETS)
def test_target_architecture_and_rope_form(name: str) -> None:
    spec = TOY_SPECS[name]
    config = AutoConfig.from_pretrained(weights_dir(name))
    assert config.architectures == [spec.architecture]
    assert (config.num_hidden_layers, config.hidden_size, config.head_dim) == (
        spec.num_layers,
        spec.hidden_size,
        spec.head_dim,
    )
    assert (config.num_attention_heads, config.num_key_value_heads) == (spec.num_heads, spec.num_kv_heads)
    assert config.vocab_size == VOCAB and config.max_position_embeddings == spec.max_position
    assert config.rope_parameters["rope_theta"] == spec.rope_theta
    raw = json.loads((weights_dir(name) / "config.json").read_text())
    assert raw["rope_theta"] == spec.rope_theta  # transformers 4.x reads the top-level keys
    assert raw.get("partial_rotary_factor", 1.0) == spec.partial_rotary_factor

    model = AutoModelForCausalLM.from_pretrained(weights_dir(name))
    assert type(model).__name__ == spec.architecture
    rot = spec.rotary_dim
    inv_freq = 1.0 / spec.rope_theta ** (torch.arange(0, rot, 2, dtype=torch.float32) / rot)
    torch.testing.assert_close(model.model.rotary_emb.inv_freq, inv_freq)
    pair = {0, rot // 2} if spec.is_neox else {0, 1}
    assert _rotated_dims(model, spec, 0) == pair
    for dim in range(rot, spec.head_dim, 7):
        assert _rotated_dims(model, spec, dim) == {dim}
    assert hasattr(model.model.layers[0].self_attn, "q_norm") == spec.qk_norm


@pytest.mark.parametrize("name", list(TOY_SPECS))
def test_tokenizer_is_the_project_tokenizer(name: str) -> None:
    path = weights_dir(name)
    assert json.loads((path / "tokenizer.json").read_text()) == json.loads(tokmod.load_tokenizer().to_str())
    assert json.loads((path / "tokenizer_config.json").read_text()) == tokmod.tokenizer_config()
    tok = AutoTokenizer.from_pretrained(path)
    assert len(tok) == VOCAB and tok.eos_token == tokmod.IM_END
    gen = json.loads((path / "generation_config.json").read_text())
    assert set(gen) == {"eos_token_id", "pad_token_id"}  # no sampling defaults for vLLM to pick up


@pytest.mark.parametrize("name", DRAFTS)
def test_eagle3_draft_layout_and_theta(name: str) -> None:
    spec = TOY_SPECS[name]
    target = TOY_SPECS[spec.target or ""]
    assert spec.rope_theta != target.rope_theta
    config = json.loads((weights_dir(name) / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLMEagle3"] and config["num_hidden_layers"] == 1
    assert config["rope_parameters"]["rope_theta"] == config["rope_theta"] == spec.rope_theta
    assert AutoConfig.from_pretrained(weights_dir(name)).rope_parameters["rope_theta"] == spec.rope_theta
    layer_ids = config["eagle_config"]["eagle_aux_hidden_state_layer_ids"]
    assert layer_ids == list(EAGLE3_AUX_LAYER_IDS)
    assert all(0 <= i <= target.num_layers for i in layer_ids)
    assert config["draft_vocab_size"] == config["vocab_size"] == VOCAB
    assert config["target_hidden_size"] == target.hidden_size

    h, q, kv = spec.hidden_size, spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    with safe_open(weights_dir(name) / "model.safetensors", "pt") as f:
        shapes = {key: list(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118
    assert shapes["fc.weight"] == [h, target.hidden_size * len(EAGLE3_AUX_LAYER_IDS)]
    assert shapes["midlayer.self_attn.q_proj.weight"] == [q, 2 * h]
    assert shapes["midlayer.self_attn.k_proj.weight"] == [kv, 2 * h]
    assert shapes["midlayer.hidden_norm.weight"] == [h]
    assert shapes["lm_head.weight"] == [VOCAB, h]
    assert not any("embed_tokens" in key for key in shapes)  # shared with the target
    summary = _record(name)["summary"]
    # Fitted with its own theta; the same weights run with the target's theta are accepted less.
    assert summary["test_acceptance_length_estimate"] > summary["wrong_theta_acceptance_length_estimate"]


def test_training_md_sha256s_match() -> None:
    text = (WEIGHTS_DIR / "TRAINING.md").read_text()
    recorded = dict(re.findall(r"^\| (\S+/\S+) \| ([0-9a-f]{64}) \|$", text, flags=re.MULTILINE))
    expected = {f"{name}/{file}" for name in TOY_SPECS for file in CHECKPOINT_FILES}
    assert set(recorded) == expected
    for rel, digest in recorded.items():
        assert sha256(WEIGHTS_DIR / rel) == digest, rel


@pytest.mark.parametrize("name", TARGETS)
def test_target_solves_toy_arith(name: str) -> None:
    """A smoke check that the weights are the trained ones: greedy transformers output on test problems."""
    suite = get_suite("toy-arith")
    items = suite.load(None, "test", 10)
    tok = AutoTokenizer.from_pretrained(weights_dir(name))
    model = AutoModelForCausalLM.from_pretrained(weights_dir(name)).eval()
    correct = 0
    for item in items:
        text = tok.apply_chat_template(
            suite.prompt(item, "chat-0shot").messages, tokenize=False, add_generation_prompt=True
        )
        ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=32, do_sample=False, eos_token_id=tok.eos_token_id)
        correct += suite.score(item, ModelOutput(tok.decode(out[0, ids.shape[1] :]))).correct
    assert correct >= 8, f"{name}: {correct}/{len(items)}"
    assert _record(name)["summary"]["test_accuracy"]["chat-0shot"]["overall"] >= 0.8
