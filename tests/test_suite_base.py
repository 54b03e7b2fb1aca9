"""The shared suite interface: registry, data sources, clear errors for missing data, data hashes,
prompts, thinking handling and its statistics."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from eval_harness.suites.base import (
    Item,
    ModelOutput,
    Prompt,
    Suite,
    data_hash,
    get_suite,
    output_stats,
    split_thinking,
    suite_names,
)
from eval_harness.suites.data import ENV_DATA, DataMissingError, DataSource, resolve_source

DATA = Path(os.environ.get("ROPE_EVAL_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"no shared data at {DATA}")
SUITES = ["gsm8k", "aime", "livecodebench"]


def test_registry():
    assert set(SUITES) <= set(suite_names())
    for name in SUITES:
        s = get_suite(name)
        assert isinstance(s, Suite) and s.name == name and s.default_style in s.styles
    with pytest.raises(KeyError, match="unknown suite"):
        get_suite("mmlu")


def test_resolve_source(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_DATA, raising=False)
    assert resolve_source(None) == DataSource("hub")
    monkeypatch.setenv(ENV_DATA, str(tmp_path))
    assert resolve_source(None) == DataSource("local", tmp_path.resolve())
    other = tmp_path / "x"
    assert resolve_source(other) == DataSource("local", other.resolve())  # --data-dir wins


@pytest.mark.parametrize(
    "name,relpath",
    [
        ("gsm8k", "gsm8k/test.jsonl"),
        ("aime", "aime/aime_2024_matharena.jsonl"),
        ("livecodebench", "livecodebench/lcb_v5_2408_2502_public.jsonl"),
    ],
)
def test_missing_local_data_error_is_clear(tmp_path, name, relpath):
    with pytest.raises(DataMissingError) as e:
        get_suite(name).load(DataSource("local", tmp_path))
    msg = str(e.value)
    assert f"suite {name!r}" in msg  # the suite
    assert str(tmp_path / relpath) in msg  # the source it tried
    assert "--data-dir" in msg and ENV_DATA in msg and "Hub" in msg  # how to provide the data


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """No network here: make `datasets` fail fast, as it would on an offline machine."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize(
    "name,hub_id",
    [
        ("gsm8k", "openai/gsm8k"),
        ("aime", "MathArena/aime_2024_I"),
        ("livecodebench", "livecodebench/code_generation_lite"),
    ],
)
def test_unreachable_hub_error_is_clear(offline_hub, name, hub_id):
    with pytest.raises(DataMissingError) as e:
        get_suite(name).load(DataSource("hub"))
    msg = str(e.value)
    assert f"suite {name!r}" in msg and hub_id in msg and "Hugging Face Hub" in msg
    assert "--data-dir" in msg and ENV_DATA in msg


@needs_data
@pytest.mark.parametrize("name", SUITES)
def test_data_hash_is_stable_and_sensitive(name):
    s = get_suite(name)
    items = s.load(DataSource("local", DATA))
    h = data_hash(items)
    assert h.startswith("sha256:") and h == data_hash(s.load(DataSource("local", DATA)))
    assert data_hash(items[:-1]) != h
    changed = [Item(items[0].id, items[0].suite, items[0].question + " ", items[0].reference, items[0].meta)]
    assert data_hash(changed + items[1:]) != h


def test_data_hash_known_value():
    """Pinned: a change here changes every manifest's data hash."""
    items = [Item("t/0", "t", "1+1?", "2", {"k": [1, 2]})]
    assert data_hash(items) == data_hash([Item("t/0", "t", "1+1?", "2", {"k": [1, 2]})])
    assert (
        data_hash(items)
        == "sha256:"
        + __import__("hashlib")
        .sha256(b'{"id": "t/0", "meta": {"k": [1, 2]}, "question": "1+1?", "reference": "2", "suite": "t"}\n')
        .hexdigest()
    )


def test_prompt_is_chat_xor_completion():
    Prompt(messages=[{"role": "user", "content": "x"}])
    Prompt(text="x")
    with pytest.raises(ValueError):
        Prompt()
    with pytest.raises(ValueError):
        Prompt(messages=[], text="x")


@pytest.mark.parametrize(
    "output,answer,reasoning,unfinished",
    [
        (ModelOutput("plain answer"), "plain answer", "", False),
        (ModelOutput("<think>hmm</think>the answer"), "the answer", "hmm", False),
        (ModelOutput("hmm</think>the answer"), "the answer", "hmm", False),  # <think> was in the prompt
        (ModelOutput("a</think>b</think>c"), "c", "a</think>b", False),  # the last close wins
        (ModelOutput("the answer", reasoning_content="hmm"), "the answer", "hmm", False),
        (ModelOutput("<think>still thinking", finish_reason="length"), "", "still thinking", True),
    ],
)
def test_split_thinking(output, answer, reasoning, unfinished):
    s = split_thinking(output)
    assert (s.answer, s.reasoning, s.unfinished_thinking) == (answer, reasoning, unfinished)


def test_output_stats():
    outs = [
        ModelOutput("x", reasoning_content="abcd", finish_reason="stop"),
        ModelOutput("<think>ab", finish_reason="length"),
        ModelOutput("", finish_reason="length"),
        ModelOutput("y"),
    ]
    st = output_stats(outs)
    assert st.n == 4
    assert st.reasoning_chars_mean == pytest.approx((4 + 2) / 4)
    assert st.finish_length_rate == pytest.approx(0.5)
    assert st.empty_answer_rate == pytest.approx(0.5)
    assert output_stats([]).n == 0
