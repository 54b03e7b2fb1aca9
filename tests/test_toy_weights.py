"""The committed toy models (eval_harness/toy/weights/) are what train.py's config describes: architecture,
RoPE form, tokenizer, eagle3 layout with its own theta (readable by vLLM 0.26 and 0.32), and the sha256s
recorded in SHA256SUMS.json, which resolve_model enforces. No vLLM engine here."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

import eval_harness.toy
from eval_harness.model_source import ModelNotFound, resolve_model
from eval_harness.models import tokenizer as tokmod
from eval_harness.models.builder import (
    SPEC_FILE,
    _add_legacy_rope_keys,
    _token_ids,
    _write_json,
    eagle3_config,
)
from eval_harness.models.specs import EAGLE3_AUX_LAYER_IDS, TOY_SPECS, VOCAB, ModelSpec
from eval_harness.suites import ModelOutput, get_suite
from eval_harness.toy import WEIGHTS_DIR, checksums, weights_dir

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
    for file in (*checksums.checked_files(TOY_SPECS[name].target is not None), SPEC_FILE):
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
    # vLLM 0.26's v2 model runner reads only the top-level key; without it the engine gets 2 aux states.
    assert config["eagle_aux_hidden_state_layer_ids"] == layer_ids
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


def test_recorded_sha256s_match_the_files_and_training_md() -> None:
    record = checksums.recorded(WEIGHTS_DIR)
    assert set(record) == set(TOY_SPECS)
    for name, files in record.items():
        assert set(files) == set(checksums.checked_files(TOY_SPECS[name].target is not None)), name
        for file, digest in files.items():
            assert checksums.sha256(WEIGHTS_DIR / name / file) == digest, f"{name}/{file}"
    text = (WEIGHTS_DIR / "TRAINING.md").read_text()
    in_md = dict(re.findall(r"^\| (\S+/\S+) \| ([0-9a-f]{64}) \|$", text, flags=re.MULTILINE))
    assert in_md == {f"{name}/{f}": d for name, files in record.items() for f, d in files.items()}


@pytest.fixture
def weights_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the committed weights that resolve_model serves from instead (so tampering stays here)."""
    copy = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, copy)
    monkeypatch.setattr(eval_harness.toy, "WEIGHTS_DIR", copy)
    return copy


def test_resolve_refuses_a_tampered_checkpoint(weights_copy: Path) -> None:
    for name in TOY_SPECS:
        assert resolve_model(f"builtin:{name}") == str(weights_copy / name)
    weights = weights_copy / "qwen3-toy" / "model.safetensors"
    original = weights.read_bytes()
    flipped = bytearray(original)
    flipped[-1] ^= 1  # one bit of the last weight: same size, only the hash tells
    weights.write_bytes(bytes(flipped))
    with pytest.raises(checksums.ChecksumMismatch, match=r"qwen3-toy/model\.safetensors has sha256") as err:
        resolve_model("builtin:qwen3-toy")
    assert isinstance(err.value, ModelNotFound)  # the CLI reports it as a usage error (exit 2)
    assert resolve_model("builtin:glm4-toy") == str(weights_copy / "glm4-toy")  # the others are intact
    weights.write_bytes(original)
    assert resolve_model("builtin:qwen3-toy") == str(weights_copy / "qwen3-toy")

    (weights_copy / "qwen3-toy-eagle3" / "eagle3_prompts.jsonl").unlink()
    with pytest.raises(
        checksums.ChecksumMismatch, match=r"qwen3-toy-eagle3/eagle3_prompts\.jsonl is missing"
    ):
        resolve_model("builtin:qwen3-toy-eagle3")
    (weights_copy / checksums.CHECKSUMS_FILE).unlink()
    with pytest.raises(checksums.ChecksumMismatch, match="cannot read the toy checkpoints' record"):
        resolve_model("builtin:glm4-toy")


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


@pytest.mark.parametrize("name", DRAFTS)
def test_eagle3_aux_layers_as_vllm_reads_them(name: str) -> None:
    """Both of vLLM's readers get the ids from the config as vLLM parses it: 0.26's v2 runner looks only at
    the top-level attribute (no fallback), 0.32's takes it first. The ids must name distinct hidden states
    the target has (id k: the stream entering layer k; k == num_layers: the last layer's output), as many
    as the draft's fc consumes."""
    from vllm.transformers_utils.config import get_config
    from vllm.v1.worker.gpu.spec_decode.eagle.eagle3_utils import get_eagle3_aux_layers_from_config

    hf_config = get_config(str(weights_dir(name)), trust_remote_code=False)
    assert tuple(getattr(hf_config, "eagle_aux_hidden_state_layer_ids", ())) == EAGLE3_AUX_LAYER_IDS
    spec_config = SimpleNamespace(draft_model_config=SimpleNamespace(hf_config=hf_config))
    ids = get_eagle3_aux_layers_from_config(spec_config)  # type: ignore[arg-type]
    assert ids == EAGLE3_AUX_LAYER_IDS
    layers = TOY_SPECS[TOY_SPECS[name].target or ""].num_layers
    assert len(set(ids)) == len(ids) == 3 and all(0 <= i <= layers for i in ids)
    with safe_open(weights_dir(name) / "model.safetensors", "pt") as f:
        assert f.get_slice("fc.weight").get_shape()[1] == len(ids) * TOY_SPECS[name].hidden_size


@pytest.mark.parametrize("name", DRAFTS)
def test_draft_config_is_what_train_exports(name: str, tmp_path: Path) -> None:
    """A retrain writes the committed config.json byte for byte (train.py exports through the builder's
    eagle3_config), so the keys vLLM needs cannot be lost by retraining."""
    spec = TOY_SPECS[name]
    _write_json(
        tmp_path / "config.json",
        eagle3_config(spec, TOY_SPECS[spec.target or ""], _token_ids(tokmod.load_tokenizer())),
    )
    _add_legacy_rope_keys(tmp_path / "config.json", spec)
    assert (tmp_path / "config.json").read_bytes() == (weights_dir(name) / "config.json").read_bytes()
