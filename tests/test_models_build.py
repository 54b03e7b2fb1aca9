"""The tiny-model builder: RoPE forms as specified, tokenizer, eagle3 draft, determinism. No vLLM here."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from eval_harness.models import SPECS, ModelSpec, build_all, build_model
from eval_harness.models.builder import PROMPTS_FILE, SPEC_FILE
from eval_harness.models.specs import BUILD_VERSION, EAGLE3_AUX_LAYER_IDS, VOCAB

TARGETS = [name for name, spec in SPECS.items() if spec.target is None]
DRAFTS = [name for name, spec in SPECS.items() if spec.target is not None]
FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    start = time.perf_counter()
    paths = build_all(tmp_path_factory.mktemp("models"), seed=0)
    print(f"\nbuild_all: {time.perf_counter() - start:.1f} s")
    for name, path in paths.items():
        print(f"  {name}: {sum(f.stat().st_size for f in path.iterdir()) / 1e6:.2f} MB")
    return paths


def _inv_freq(theta: float, rotary_dim: int) -> torch.Tensor:
    return 1.0 / theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim)


def _rotated_dims(model: PreTrainedModel, spec: ModelSpec, dim: int) -> set[int]:
    """Apply the model's own RoPE, at position 1, to a unit vector on `dim`; return the dims it lands on.
    The slowest frequency turns by ~1e-6 rad there; dims it never touches stay exactly 0."""
    modeling = sys.modules[type(model).__module__]
    x = torch.zeros(1, 1, 1, spec.head_dim)
    x[..., dim] = 1.0
    cos, sin = model.model.rotary_emb(x, torch.tensor([[1]]))
    q, _ = modeling.apply_rotary_pos_emb(x, x, cos, sin)
    return set(torch.nonzero(q[0, 0, 0]).flatten().tolist())


def test_files_and_sizes(built: dict[str, Path]) -> None:
    assert set(built) == set(SPECS)
    for name, path in built.items():
        assert path.name == name
        for file in (*FILES, SPEC_FILE):
            assert (path / file).is_file(), f"{name}: {file} missing"
        assert sum(f.stat().st_size for f in path.iterdir()) < 5e6, name
        meta = json.loads((path / SPEC_FILE).read_text())
        assert meta["name"] == name and meta["seed"] == 0 and meta["build_version"] == BUILD_VERSION


@pytest.mark.parametrize("name", TARGETS)
def test_target_rope_form(built: dict[str, Path], name: str) -> None:
    spec = SPECS[name]
    config = AutoConfig.from_pretrained(built[name])
    assert config.architectures == [spec.architecture]
    assert config.head_dim == spec.head_dim
    assert config.max_position_embeddings == spec.max_position
    assert config.rope_parameters["rope_theta"] == spec.rope_theta
    factor = config.rope_parameters.get("partial_rotary_factor", 1.0)
    assert int(spec.head_dim * factor) == spec.rotary_dim
    # transformers 4.x reads the top-level keys; they must agree.
    raw = json.loads((built[name] / "config.json").read_text())
    assert raw["rope_theta"] == spec.rope_theta
    assert raw.get("partial_rotary_factor", 1.0) == spec.partial_rotary_factor

    model = AutoModelForCausalLM.from_pretrained(built[name])
    assert type(model).__name__ == spec.architecture
    torch.testing.assert_close(model.model.rotary_emb.inv_freq, _inv_freq(spec.rope_theta, spec.rotary_dim))
    # Style: neox pairs dim i with i + rotary_dim/2, GPT-J pairs 2i with 2i + 1.
    rot = spec.rotary_dim
    if spec.is_neox:
        assert _rotated_dims(model, spec, 0) == {0, rot // 2}
        assert _rotated_dims(model, spec, rot - 1) == {rot // 2 - 1, rot - 1}
    else:
        assert _rotated_dims(model, spec, 0) == {0, 1}
        assert _rotated_dims(model, spec, rot - 1) == {rot - 2, rot - 1}
    # Partial rotary: dims past rotary_dim pass through.
    for dim in range(rot, spec.head_dim, 7):
        assert _rotated_dims(model, spec, dim) == {dim}
    assert hasattr(model.model.layers[0].self_attn, "q_norm") == spec.qk_norm
    if spec.moe:
        assert "experts" in dict(model.model.layers[1].mlp.named_children())
        assert not hasattr(model.model.layers[0].mlp, "experts")


@pytest.mark.parametrize("name", TARGETS)
def test_greedy_is_not_degenerate(built: dict[str, Path], name: str) -> None:
    tok = AutoTokenizer.from_pretrained(built[name])
    model = AutoModelForCausalLM.from_pretrained(built[name])
    for prompt in ("Natalia sold clips to 48 of her friends in April.", "def solve(n):\n    return"):
        ids = tok(prompt, return_tensors="pt").input_ids
        out = model.generate(ids, max_new_tokens=30, min_new_tokens=30, do_sample=False)[0, ids.shape[1] :]
        assert len(set(out.tolist())) >= 8, (name, prompt, out.tolist())


def test_tokenizer(built: dict[str, Path]) -> None:
    path = built["qwen3-tiny"]
    tok = AutoTokenizer.from_pretrained(path)
    assert len(tok) == VOCAB == AutoConfig.from_pretrained(path).vocab_size
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>" and tok.bos_token is None
    for text in (
        "Natalia sold 48 clips in April and 24 in May.",
        "$\\frac{1}{6}$ and \\boxed{231}",
        "def f(x):\n\treturn x ** 2  # tab, spaces\n",
        "naïve café 日本語 😀 \u00a0",
        "<think>reasoning</think>answer",
    ):
        assert tok.decode(tok.encode(text)) == text
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>"):
        assert len(tok.encode(special)) == 1, special
    # Digits are single tokens, as in Qwen.
    assert len(tok.encode("1234567")) == 7

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert tok.apply_chat_template(messages, tokenize=False).endswith("What is 2+2?<|im_end|>\n")

    gen = json.loads((path / "generation_config.json").read_text())
    assert tok.convert_tokens_to_ids("<|im_end|>") in gen["eos_token_id"]
    # No sampling defaults: vLLM would apply them to every request.
    assert set(gen) == {"eos_token_id", "pad_token_id"}
    # Every model shares the tokenizer, so the draft shares its target's vocabulary.
    for other in built.values():
        assert (other / "tokenizer.json").read_bytes() == (path / "tokenizer.json").read_bytes()


@pytest.mark.parametrize("name", DRAFTS)
def test_eagle3_draft(built: dict[str, Path], name: str) -> None:
    spec = SPECS[name]
    target = SPECS[spec.target or ""]
    assert spec.rope_theta != target.rope_theta
    config = json.loads((built[name] / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLMEagle3"]
    assert config["num_hidden_layers"] == 1
    assert config["rope_parameters"]["rope_theta"] == config["rope_theta"] == spec.rope_theta
    assert AutoConfig.from_pretrained(built[name]).rope_parameters["rope_theta"] == spec.rope_theta
    layer_ids = config["eagle_config"]["eagle_aux_hidden_state_layer_ids"]
    # vLLM's id k is the residual stream entering target layer k; k == num_layers is the last layer's output.
    assert all(0 <= i <= target.num_layers for i in layer_ids) and len(set(layer_ids)) == len(layer_ids)
    # vLLM 0.26's v2 model runner reads the ids only from the top level; its default (2, L//2, L-3) gives a
    # 2-layer target 2 aux states where fc takes 3, and the engine dies on the matmul.
    assert config["eagle_aux_hidden_state_layer_ids"] == layer_ids == list(EAGLE3_AUX_LAYER_IDS)
    assert config["draft_vocab_size"] == config["vocab_size"] == VOCAB
    assert config["target_hidden_size"] == target.hidden_size

    h, q, kv = spec.hidden_size, spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    with safe_open(built[name] / "model.safetensors", "pt") as f:
        shapes = {key: list(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118
    assert shapes["fc.weight"] == [h, target.hidden_size * len(EAGLE3_AUX_LAYER_IDS)]
    assert shapes["midlayer.self_attn.q_proj.weight"] == [q, 2 * h]
    assert shapes["midlayer.self_attn.k_proj.weight"] == [kv, 2 * h]
    assert shapes["lm_head.weight"] == [VOCAB, h]
    assert not any("embed_tokens" in key for key in shapes)  # shared with the target


@pytest.mark.parametrize("name", DRAFTS)
def test_eagle3_fit(built: dict[str, Path], name: str) -> None:
    """The draft was fitted to the target's greedy continuations, and the fit depends on the draft's theta."""
    meta = json.loads((built[name] / SPEC_FILE).read_text())
    print(f"\n{name}: accuracy {meta['train_accuracy']}, with target theta {meta['wrong_theta_accuracy']}")
    assert meta["distilled"] and min(meta["train_accuracy"]) > 0.95
    assert max(meta["wrong_theta_accuracy"]) < min(meta["train_accuracy"]) - 0.15

    target_path = built[SPECS[name].target or ""]
    tok = AutoTokenizer.from_pretrained(target_path)
    model = AutoModelForCausalLM.from_pretrained(target_path)
    rows = [json.loads(line) for line in (built[name] / PROMPTS_FILE).read_text().splitlines()]
    assert len(rows) >= 8
    prompts = torch.tensor([row["prompt_token_ids"] for row in rows])
    n = len(rows[0]["target_greedy_token_ids"])
    out = model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=n, min_new_tokens=n)
    for row, continuation in zip(rows, out[:, prompts.shape[1] :].tolist(), strict=True):
        assert tok.encode(row["prompt"]) == row["prompt_token_ids"]  # text and ids are interchangeable
        assert continuation == row["target_greedy_token_ids"]


def test_build_is_deterministic(built: dict[str, Path], tmp_path: Path) -> None:
    start = time.perf_counter()
    again = build_all(tmp_path / "again", seed=0)
    print(f"\nsecond build_all: {time.perf_counter() - start:.1f} s")
    for name, path in built.items():
        for file in sorted(p.name for p in path.iterdir()):
            assert (again[name] / file).read_bytes() == (path / file).read_bytes(), f"{name}/{file}"

    # The tokenizer is trained once per process; train it afresh in another (Rust hash maps seed per process).
    code = "from eval_harness.models.tokenizer import train_tokenizer; print(train_tokenizer().to_str())"
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert fresh.strip() == Tokenizer.from_file(str(built["qwen3-tiny"] / "tokenizer.json")).to_str()

    other = build_model("qwen3-tiny", tmp_path / "seed1", seed=1)
    assert (other / "model.safetensors").read_bytes() != (
        built["qwen3-tiny"] / "model.safetensors"
    ).read_bytes()
    assert (other / "tokenizer.json").read_bytes() == (built["qwen3-tiny"] / "tokenizer.json").read_bytes()


def test_rebuild_replaces_only_our_models(tmp_path: Path) -> None:
    first = build_model("glm4-tiny", tmp_path, seed=0)
    assert build_model("glm4-tiny", tmp_path, seed=0) == first  # an earlier build is replaced
    (tmp_path / "qwen3-tiny").mkdir()
    (tmp_path / "qwen3-tiny" / "precious.txt").write_text("not ours")
    with pytest.raises(FileExistsError):
        build_model("qwen3-tiny", tmp_path)
    assert (tmp_path / "qwen3-tiny" / "precious.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs left
    with pytest.raises(KeyError):
        build_model("no-such-model", tmp_path)
