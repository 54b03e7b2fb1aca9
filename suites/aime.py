"""AIME 2024 + 2025 with the Qwen3 prompt (suites/aime.yaml).

A verdict comes from exactly one of two rules, and nothing else:
1. the last-`\\boxed{}` integer rule: when the last `\\boxed{...}` (braces matched) holds an ASCII integer
   (leading zeros allowed: answer keys are written 000-999), it is compared with the reference;
2. otherwise math-verify's verdict on the whole answer (the text after thinking): its own extraction
   and equivalence, untouched.
The departures in `AIMEOptions` are off unless a config turns them on, and every verdict names them.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from .base import (
    Item,
    ModelOutput,
    Prompt,
    Verdict,
    departures_of,
    load_spec,
    output_details,
    split_thinking,
)
from .data import DataMissingError, DataSource, load_hub_rows, read_local_jsonl

SPEC = load_spec("aime")


@dataclass(frozen=True)
class AIMEOptions:
    """Departures from the two rules above; all off by default."""

    # `\fbox{...}` counts as a box for the integer rule (math-verify does not read \fbox).
    fbox: bool = False
    # Non-ASCII decimal digits (Arabic-Indic, full-width, ...) count in the integer rule: "\boxed{٧٠}" is 70.
    unicode_digits: bool = False

    @property
    def departures(self) -> tuple[str, ...]:
        return departures_of(self)


_BOXED = re.compile(r"\\boxed(?=\s*\{)")
_BOXED_OR_FBOX = re.compile(r"\\(?:boxed|fbox)(?=\s*\{)")
_ASCII_INT = re.compile(r"[0-9]+", re.ASCII)
_ANY_DIGITS = re.compile(r"\d+")


def last_boxed(text: str, fbox: bool = False) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}` with `fbox`), matching nested braces and
    stripped; None when there is none or the last one is unclosed (truncated)."""
    starts = [m.end() for m in (_BOXED_OR_FBOX if fbox else _BOXED).finditer(text)]
    if not starts:
        return None
    body = text[starts[-1] :].lstrip()
    depth = 0
    for i, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return body[1:i].strip()
    return None


def as_integer(answer: str, unicode_digits: bool = False) -> int | None:
    """The integer a box holds, when it holds nothing but decimal digits; else None."""
    if (_ANY_DIGITS if unicode_digits else _ASCII_INT).fullmatch(answer):
        return int(answer)  # int() reads every Unicode decimal digit
    return None


def math_verify_verdict(answer_text: str, reference: int) -> tuple[bool, str | None]:
    """math-verify's verdict on the whole answer text against the reference, with its default
    extraction, and the answer it extracted (None when it found none). Its timeouts use SIGALRM, which
    only the main thread may set."""
    from math_verify import parse, verify

    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold = parse(f"${reference}$", parsing_timeout=timeout)
        pred = parse(answer_text, parsing_timeout=timeout)
        extracted = str(pred[-1]) if pred else None
        return bool(pred) and verify(gold, pred, timeout_seconds=timeout), extracted
    except Exception:  # math-verify's own failures (timeouts, sympy errors) mean "not shown equal"
        return False, None


def score_answer(answer_text: str, reference: int, options: AIMEOptions | None = None) -> Verdict:
    options = options or AIMEOptions()
    details: dict = {"departures": list(options.departures)}
    boxed = last_boxed(answer_text, fbox=options.fbox)
    value = None if boxed is None else as_integer(boxed, options.unicode_digits)
    if value is not None:
        ok = value == int(reference)
        reason = f"integer {value} {'==' if ok else '!='} {reference}"
        return Verdict(ok, boxed, reason, {**details, "method": "integer"})
    ok, extracted = math_verify_verdict(answer_text, int(reference))
    if extracted is None:
        reason = "math-verify: no answer found"
    else:
        reason = f"math-verify: {extracted!r} {'equivalent' if ok else 'not equivalent'} to {reference}"
    return Verdict(ok, extracted, reason, {**details, "method": "math-verify"})


class AIME:
    name = "aime"
    styles = tuple(SPEC["styles"])
    default_style = SPEC["default_style"]
    Options = AIMEOptions

    def __init__(self, options: AIMEOptions | None = None) -> None:
        self.options = options or AIMEOptions()
        self.departures = self.options.departures

    def _rows(self, source: DataSource, year: str) -> list[dict]:
        rel = SPEC["local"][year]
        if source.kind == "local":
            return read_local_jsonl(source, self.name, rel, SPEC["hub"][year][0]["path"])
        rows = []
        for part in SPEC["hub"][year]:
            for r in load_hub_rows(self.name, rel, part["path"], split=part["split"]):
                idx = int(r["problem_idx"])
                comp = part["competition"]
                if comp == "aime_2025":  # one Hub table for both papers
                    comp, idx = ("aime_2025_I", idx) if idx <= 15 else ("aime_2025_II", idx - 15)
                rows.append(
                    {"competition": comp, "id": idx, "problem": r["problem"], "answer": int(r["answer"])}
                )
        return rows

    def load(self, source: DataSource, split: str = "test", limit: int | None = None) -> list[Item]:
        if split not in SPEC["splits"]:
            raise DataMissingError(
                f"suite 'aime': unknown split {split!r}; use one of {list(SPEC['splits'])}"
            )
        items = []
        for year in SPEC["splits"][split]:
            for r in self._rows(source, year):
                comp = r["competition"].removeprefix("aime_")  # "2024_I"
                items.append(
                    Item(
                        id=f"aime/{comp}/{r['id']}",
                        suite=self.name,
                        question=r["problem"],
                        reference=int(r["answer"]),
                        meta={"year": int(year), "competition": r["competition"], "number": r["id"]},
                    )
                )
        return items[:limit]

    def prompt(self, item: Item, style: str) -> Prompt:
        if style not in SPEC["styles"]:
            raise ValueError(f"aime: unknown style {style!r}; known: {', '.join(self.styles)}")
        st = SPEC["styles"][style]
        text = st["template"].format(problem=item.question, instruction=SPEC["instruction"])
        if st["format"] == "chat":
            return Prompt(messages=[{"role": "user", "content": text}])
        return Prompt(text=text)

    def score(self, item: Item, output: ModelOutput, style: str | None = None) -> Verdict:
        split = split_thinking(output)
        details = output_details(output, split)
        v = score_answer(split.answer, item.reference, self.options)
        # cut while thinking: the answer is what preceded `<think>`, usually nothing
        reason = f"thinking never finished; {v.reason}" if split.unfinished_thinking else v.reason
        return Verdict(v.correct, v.extracted, reason, {**v.details, **details})

    def score_many(
        self, pairs: Sequence[tuple[Item, ModelOutput]], workers: int | None = None, style: str | None = None
    ) -> list[Verdict]:
        # sequential: math-verify's timeouts need the main thread
        return [self.score(it, out, style) for it, out in pairs]
