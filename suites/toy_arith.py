"""toy-arith: a synthetic GSM8K-format suite that tiny trained models can solve (eval_harness/toy/).

Random-weight tiny models score 0% everywhere, which leaves L3 and the eagle3 acceptance diff degenerate
without a real checkpoint. toy-arith is small enough for a 2-layer model trained on the CPU: multi-digit
addition and subtraction, plus two-step word problems. Solutions end in `#### N`, so GSM8K's scorer applies
unchanged.

Generated from a seed, no data files. Train and test are disjoint by construction: a problem's arithmetic
(kind and operands, not its wording) hashes to one split, and each split only keeps its own. A share of the
problems open with a filler preamble of 60-150 tokens, so the question and answer sit at positions beyond
64, where position-dependent RoPE errors show.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .base import Item, ModelOutput, Prompt, Verdict, output_details, split_thinking
from .data import DataSource
from .gsm8k import score_text

NAME = "toy-arith"
SEED = 0  # the suite's own seed: `load` always returns the same items
SPLIT_SIZES = {"test": 500, "train": 20000}
TEST_SHARE = 8  # one arithmetic tuple in TEST_SHARE belongs to the test split

# Operands have two digits; a sum always has three (a + b >= 100) and a difference two (a - b >= 10). With
# every width fixed, each digit of a result sits at a fixed distance from the digits it is made of, and the
# answer after `####` at a fixed distance from the result it copies: lookups at fixed relative positions,
# which a 2-layer RoPE model learns in minutes on a CPU. Carries and borrows stay (about half the problems).
LOW, HIGH = 10, 99
MIN_SUM, MIN_DIFFERENCE = 100, 10
KIND_WEIGHTS = {"add": 0.45, "sub": 0.4, "word": 0.15}
PREAMBLE_SHARE = 0.3

# Fixed filler; a preamble is its first 2-4 sentences (tests/test_toy_arith.py checks 60-150 tokens).
FILLER: tuple[str, ...] = (
    "Read the note below with care before you answer the question at the end of it.",
    "The market in the old town opens early, and the traders set out their stalls before the sun is up.",
    "Some of them sell fruit and bread, some sell cloth, and a few sell small tools and toys for children.",
    "By noon the square is full, and the count of every stall changes as goods are bought and sold.",
)
PREAMBLE_SENTENCES = (2, 3, 4)

# Word problems fill one template whose every slot choice has the same token count, so their numbers sit
# at fixed distances from the answer, as the plain problems' do.
NAMES = ("Tom", "Mia", "Sam", "Kim", "Ben", "Jack")
THINGS = ("apples", "coins", "marbles", "cards", "cups", "shells")
GAINS = ("buys", "finds")
LOSSES = ("gives away", "sells", "loses", "eats")

# Greedy chat-0shot accuracy of the toy models through vLLM on the CPU: qwen3-toy 0.943, glm4-toy 0.950 on
# 300 problems (benchmarks/toy-vllm-2026-11-29.md). `rope-eval plan` sizes the suite for a drop from it:
# McNemar's exact test needs 119 problems for 90% power to detect a 10-point drop (alpha 0.05, two-sided; a
# broken path's flips: 11% right->wrong and 1% wrong->right). The power depends on the flips alone; the
# baseline bounds them (no more wrong->right flips than wrong answers).
BASELINE_ACCURACY = 0.95
# Problems per profile, from that sizing (tests/test_plan.py keeps them in step with it): smoke reaches 90%
# power for a 10-point drop, nightly for a 5-point drop (289 needed), release takes the whole test split
# (500: a 5-point drop even with 5% background flips, 431 needed). Generation costs seconds here; start-up
# dominates, so there is no reason to run fewer.
DEFAULT_LIMITS: dict[str, int | None] = {"smoke": 120, "nightly": 300, "release": None}

STYLES: dict[str, str] = {
    "chat-0shot": "{question}",
    "completion-0shot": "Question: {question}\nAnswer:",
}


@dataclass(frozen=True)
class Problem:
    kind: str  # "add", "sub", "word"
    operands: tuple[int, ...]
    question: str
    solution: str  # the training target, e.g. "92-28=64, 64+45=109 #### 109"
    answer: int
    preamble_sentences: int  # 0: no preamble

    @property
    def key(self) -> str:
        """The arithmetic alone: two wordings of one sum land in the same split."""
        return f"{self.kind}:{','.join(map(str, self.operands))}"


def split_of(key: str) -> str:
    digest = hashlib.sha256(f"toy-arith/{key}".encode()).digest()
    return "test" if int.from_bytes(digest[:4], "big") % TEST_SHARE == 0 else "train"


def _pair(rng: random.Random, op: str) -> tuple[int, int]:
    """Two operands whose sum or difference has the fixed width (rejection sampling keeps it uniform)."""
    while True:
        a, b = rng.randint(LOW, HIGH), rng.randint(LOW, HIGH)
        if (a + b >= MIN_SUM) if op == "+" else (a - b >= MIN_DIFFERENCE):
            return a, b


def _plain(rng: random.Random, kind: str) -> tuple[tuple[int, ...], str, str, int]:
    op = "+" if kind == "add" else "-"
    a, b = _pair(rng, op)
    result = a + b if op == "+" else a - b
    return (a, b), f"What is {a} {op} {b}?", f"{a}{op}{b}={result} #### {result}", result


def _word(rng: random.Random) -> tuple[tuple[int, ...], str, str, int]:
    """Two steps, a loss then a gain, each with the widths of the plain problems."""
    name = rng.choice(NAMES)
    thing = rng.choice(THINGS)
    gain, loss = rng.choice(GAINS), rng.choice(LOSSES)
    a, b = _pair(rng, "-")
    mid = a - b
    c = rng.randint(max(LOW, MIN_SUM - mid), HIGH)
    result = mid + c
    question = f"{name} has {a} {thing}, {loss} {b}, then {gain} {c} more. How many {thing} now?"
    return (a, -b, c), question, f"{a}-{b}={mid}, {mid}+{c}={result} #### {result}", result


def _problems(seed: int, split: str, unique: bool = True) -> Iterator[Problem]:
    """Endless problems of one split, in a fixed order; `unique=False` lets a problem come back (training
    needs more draws than the two-digit train split has distinct sums)."""
    rng = random.Random(f"toy-arith/{seed}/{split}")
    kinds, weights = zip(*KIND_WEIGHTS.items(), strict=True)
    seen: set[str] = set()
    while True:
        kind = rng.choices(kinds, weights)[0]
        operands, question, solution, answer = _word(rng) if kind == "word" else _plain(rng, kind)
        sentences = rng.choice(PREAMBLE_SENTENCES) if rng.random() < PREAMBLE_SHARE else 0
        problem = Problem(kind, operands, question, solution, answer, sentences)
        if split_of(problem.key) != split or (unique and problem.key in seen):
            continue
        seen.add(problem.key)
        yield problem


def generate(split: str, n: int, seed: int = SEED, unique: bool = True) -> list[Problem]:
    """The first n problems of a split; a prefix of any longer request with the same seed."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"toy-arith: unknown split {split!r}; known: {', '.join(SPLIT_SIZES)}")
    return list(itertools.islice(_problems(seed, split, unique), n))


def full_question(problem: Problem) -> str:
    """The question as the model sees it, preamble included."""
    if not problem.preamble_sentences:
        return problem.question
    return " ".join(FILLER[: problem.preamble_sentences]) + "\n" + problem.question


def render(question: str, style: str) -> Prompt:
    if style not in STYLES:
        raise ValueError(f"{NAME}: unknown style {style!r}; known: {', '.join(STYLES)}")
    content = STYLES[style].format(question=question)
    if style.startswith("chat"):
        return Prompt(messages=[{"role": "user", "content": content}])
    return Prompt(text=content)


def completion_target(solution: str) -> str:
    """What follows a completion-0shot prompt (`...Answer:`)."""
    return " " + solution


class ToyArith:
    name = NAME
    styles = tuple(STYLES)
    default_style = "chat-0shot"
    baseline_accuracy = BASELINE_ACCURACY

    def __init__(self, style: str | None = None, seed: int = SEED) -> None:
        self.style = style or self.default_style
        self.seed = seed

    def load(
        self, source: DataSource | None = None, split: str = "test", limit: int | None = None
    ) -> list[Item]:
        """Generated, so `source` is ignored."""
        n = SPLIT_SIZES[split] if limit is None else min(limit, SPLIT_SIZES[split])
        return [
            Item(
                id=f"{NAME}/{split}/{i}",
                suite=NAME,
                question=full_question(p),
                reference=str(p.answer),
                meta={"solution": p.solution, "kind": p.kind, "preamble_sentences": p.preamble_sentences},
            )
            for i, p in enumerate(generate(split, n, self.seed))
        ]

    def prompt(self, item: Item, style: str) -> Prompt:
        return render(item.question, style)

    def score(self, item: Item, output: ModelOutput, style: str | None = None) -> Verdict:
        split = split_thinking(output)
        v = score_text(split.answer, str(item.reference))
        details = {**v.details, **output_details(output, split), "style": style or self.style}
        if split.unfinished_thinking:
            return Verdict(False, None, "thinking never finished: no answer", details)
        return Verdict(v.correct, v.extracted, v.reason, details)

    def score_many(
        self, pairs: Sequence[tuple[Item, ModelOutput]], workers: int | None = None, style: str | None = None
    ) -> list[Verdict]:
        return [self.score(it, out, style) for it, out in pairs]
