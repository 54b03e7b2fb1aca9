"""The suite interface shared by GSM8K, AIME and LiveCodeBench, plus thinking-text handling.

A suite loads items with stable ids, renders a prompt for a style ("chat-0shot", "completion-8shot",
...), and scores one model output into a Verdict. Suites are looked up by name with `get_suite`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import yaml

from .data import DataSource

SUITE_DIR = Path(__file__).parent


@dataclass(frozen=True)
class Item:
    id: str  # stable across runs and machines, e.g. "gsm8k/test/0", "aime/2024_I/1", "lcb/abc365_b"
    suite: str
    question: str
    reference: Any
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Prompt:
    """Exactly one of `messages` (chat) and `text` (completion) is set."""

    messages: list[dict] | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.text is None):
            raise ValueError("Prompt needs exactly one of messages (chat) or text (completion)")


@dataclass(frozen=True)
class ModelOutput:
    text: str
    reasoning_content: str | None = None
    finish_reason: str | None = None


@dataclass(frozen=True)
class Verdict:
    correct: bool
    extracted: str | None
    reason: str
    details: dict = field(default_factory=dict)


@runtime_checkable
class Suite(Protocol):
    name: str
    styles: tuple[str, ...]
    default_style: str

    def load(self, source: DataSource, split: str = "test", limit: int | None = None) -> list[Item]: ...

    def prompt(self, item: Item, style: str) -> Prompt: ...

    def score(self, item: Item, output: ModelOutput, style: str | None = None) -> Verdict: ...

    def score_many(
        self, pairs: Sequence[tuple[Item, ModelOutput]], workers: int | None = None, style: str | None = None
    ) -> list[Verdict]: ...


_REGISTRY: dict[str, str] = {
    "gsm8k": "eval_harness.suites.gsm8k:GSM8K",
    "aime": "eval_harness.suites.aime:AIME",
    "livecodebench": "eval_harness.suites.livecodebench:LiveCodeBench",
    "toy-arith": "eval_harness.suites.toy_arith:ToyArith",
}


def register_suite(name: str, target: str | Callable[[], Suite]) -> None:
    """Add a suite: a factory, or "module:Class" imported on first use."""
    _REGISTRY[name] = target  # type: ignore[assignment]


def suite_names() -> list[str]:
    return sorted(_REGISTRY)


def get_suite(name: str, options: Mapping[str, bool] | None = None) -> Suite:
    """The suite `name`, with its scoring options (departures from the reference scorer) switched on as
    given; with none, the suite scores exactly as its reference (lm-eval, math-verify) does."""
    try:
        target: Any = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown suite {name!r}; known: {', '.join(suite_names())}") from None
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
    if not options:
        return target()
    options_cls = getattr(target, "Options", None)
    if options_cls is None:
        raise ValueError(f"suite {name!r} takes no options; got {sorted(options)}")
    known = {f.name for f in fields(options_cls)}
    if unknown := sorted(set(options) - known):
        raise ValueError(f"suite {name!r}: unknown options {unknown}; known: {sorted(known)}")
    return target(options=options_cls(**options))


def departures_of(options: object) -> tuple[str, ...]:
    """The switched-on boolean fields of a suite's options dataclass, as report names ("unicode-minus").
    Every verdict carries them, so a score can always say which non-reference rules produced it."""
    return tuple(f.name.replace("_", "-") for f in fields(options) if getattr(options, f.name) is True)  # type: ignore[arg-type]


def suite_departures(suite: object) -> tuple[str, ...]:
    """A suite's switched-on departures; () for suites that have none."""
    return tuple(getattr(suite, "departures", ()))


def load_spec(name: str) -> dict:
    """The suite's declarative part (prompts, regexes, data locations) from suites/<name>.yaml."""
    with open(SUITE_DIR / f"{name}.yaml") as f:
        return yaml.safe_load(f)


# ---- thinking text -------------------------------------------------------------------------------

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class Split:
    answer: str  # what extraction sees
    reasoning: str  # stripped thinking text (from reasoning_content and/or <think> tags)
    unfinished_thinking: bool  # "<think>" opened but never closed: the answer never started


def split_thinking(output: ModelOutput) -> Split:
    """Remove thinking before extraction. vLLM's reasoning parser already moves it to
    `reasoning_content`; without one, the text holds `<think>...</think>`. Qwen3's chat template puts
    `<think>` in the prompt, so often only `</think>` appears: everything before the last one is
    reasoning. An opened but unclosed `<think>` (truncated) leaves no answer at all."""
    text = output.text or ""
    reasoning = output.reasoning_content or ""
    if THINK_CLOSE in text:
        head, _, answer = text.rpartition(THINK_CLOSE)
        reasoning += head.replace(THINK_OPEN, "")
        return Split(answer, reasoning, False)
    if THINK_OPEN in text:
        head, _, tail = text.partition(THINK_OPEN)
        return Split(head if head.strip() else "", reasoning + tail, True)
    return Split(text, reasoning, False)


def output_details(output: ModelOutput, split: Split) -> dict:
    """Per-output facts every suite records, aggregated by `output_stats`."""
    return {
        "finish_reason": output.finish_reason,
        "reasoning_chars": len(split.reasoning),
        "empty_answer": not split.answer.strip(),
        "unfinished_thinking": split.unfinished_thinking,
    }


@dataclass(frozen=True)
class OutputStats:
    n: int
    reasoning_chars_mean: float
    finish_length_rate: float  # share of outputs cut by the token limit (finish_reason == "length")
    empty_answer_rate: float  # share with nothing left after thinking is removed


def output_stats(outputs: Sequence[ModelOutput]) -> OutputStats:
    """Thinking/truncation statistics for one suite's outputs."""
    n = len(outputs)
    if n == 0:
        return OutputStats(0, 0.0, 0.0, 0.0)
    splits = [split_thinking(o) for o in outputs]
    return OutputStats(
        n=n,
        reasoning_chars_mean=sum(len(s.reasoning) for s in splits) / n,
        finish_length_rate=sum(o.finish_reason == "length" for o in outputs) / n,
        empty_answer_rate=sum(not s.answer.strip() for s in splits) / n,
    )


def _canonical(items: list[Item]) -> Iterator[bytes]:
    for it in items:
        yield json.dumps(asdict(it), sort_keys=True, ensure_ascii=False, default=str).encode() + b"\n"


def data_hash(items: list[Item]) -> str:
    """sha256 over the canonical JSON of each item in order (ids, text, references, metadata)."""
    h = hashlib.sha256()
    for chunk in _canonical(items):
        h.update(chunk)
    return "sha256:" + h.hexdigest()
