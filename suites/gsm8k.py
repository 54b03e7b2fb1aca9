"""GSM8K: lm-eval-compatible prompts and strict/flexible extraction (suites/gsm8k.yaml).

By default a verdict is exactly lm-eval 0.4.13's: its regex + take_first filters and its exact_match
normalisation, applied to the text after the last `</think>` (lm-eval's `think_end_token`). The
departures in `GSM8KOptions` are off unless a config turns them on, and every verdict names them.
"""

from __future__ import annotations

import functools
import re
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
from .data import DataSource, load_hub_rows, read_local_jsonl, resolve_source

SPEC = load_spec("gsm8k")
# U+2212 minus sign, U+2012 figure dash, U+2013 en dash: read as '-' only under `unicode_minus`.
_UNICODE_MINUS = str.maketrans({"\u2212": "-", "\u2012": "-", "\u2013": "-"})
THINK_END = "</think>"


@dataclass(frozen=True)
class GSM8KOptions:
    """Departures from lm-eval's gsm8k scoring; all off by default."""

    # Unicode minus signs and dashes count as '-': lm-eval's regexes only know ASCII '-', so "#### −3"
    # is "[invalid]" there and -3 here.
    unicode_minus: bool = False
    # An opened, never closed `<think>` leaves no answer (the output was cut while thinking); lm-eval
    # scores such a text whole, so a number inside the unfinished thinking can still match.
    unclosed_think_no_answer: bool = False

    @property
    def departures(self) -> tuple[str, ...]:
        return departures_of(self)


@dataclass(frozen=True)
class Extractor:
    """lm-eval's `regex` filter followed by `take_first`: findall, pick `group_select`, and for a
    multi-group pattern the first non-empty group; "[invalid]" when nothing matches."""

    regex: str
    group_select: int = 0
    fallback: str = "[invalid]"

    def __call__(self, text: str) -> str:
        matches = re.findall(self.regex, text)
        if not matches:
            return self.fallback
        m = matches[self.group_select]
        if isinstance(m, tuple):
            m = next((g for g in m if g), self.fallback)
        return m.strip()


def normalise(s: str) -> str:
    """lm-eval exact_match normalisation for GSM8K: drop commas, `$`, everything up to `#### `, a
    trailing period; lower-case."""
    for pattern in SPEC["exact_match"]["regexes_to_ignore"]:
        s = re.sub(pattern, "", s)
    return s.lower() if SPEC["exact_match"]["ignore_case"] else s


HASH_STRICT = Extractor(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE = Extractor(SPEC["flexible-extract"]["regex"], SPEC["flexible-extract"]["group_select"])


def score_text(
    answer_text: str, reference: str, strict: Extractor = HASH_STRICT, *, unicode_minus: bool = False
) -> Verdict:
    """Score an answer text (thinking already removed) against a reference (a number, or a full
    GSM8K solution ending in `#### N`) as lm-eval does. Reusable by any suite whose answers follow the
    same rules. `unicode_minus` is a departure: Unicode minus and dashes count as '-'."""
    text = answer_text.translate(_UNICODE_MINUS) if unicode_minus else answer_text
    ref = normalise(reference)
    results = {}
    for name, extractor in (("strict-match", strict), ("flexible-extract", FLEXIBLE)):
        got = extractor(text)
        results[name] = {"extracted": got, "correct": normalise(got) == ref}
    primary = results[SPEC["primary"]]
    if primary["correct"]:
        reason = f"{SPEC['primary']}: {primary['extracted']} == {ref}"
    elif primary["extracted"] == "[invalid]":
        reason = f"{SPEC['primary']}: no answer in the expected format"
    else:
        reason = f"{SPEC['primary']}: {primary['extracted']} != {ref}"
    extracted = None if primary["extracted"] == "[invalid]" else primary["extracted"]
    return Verdict(primary["correct"], extracted, reason, {"filters": results, "reference": ref})


def lm_eval_answer(text: str) -> str:
    """What lm-eval's filters see with `think_end_token="</think>"`: the text after the last
    `</think>`, left-stripped; the whole text when there is none (lm-eval's postprocess_generated_text)."""
    return text.split(THINK_END)[-1].lstrip()


@functools.cache
def _strict_for(style: str) -> Extractor:
    cfg = SPEC["styles"][style]["strict"]
    return Extractor(cfg["regex"], cfg.get("group_select", 0))


def final_answer(solution: str) -> str:
    return solution.split("####")[-1].strip()


class GSM8K:
    name = "gsm8k"
    styles = tuple(SPEC["styles"])
    default_style = SPEC["default_style"]

    Options = GSM8KOptions

    def __init__(self, style: str | None = None, options: GSM8KOptions | None = None) -> None:
        self.style = style or self.default_style
        self.options = options or GSM8KOptions()
        self.departures = self.options.departures
        self._train: list[dict] | None = None
        self._source: DataSource | None = None

    # -- data ----------------------------------------------------------------------------------
    def _rows(self, source: DataSource, split: str) -> list[dict]:
        rel = SPEC["local"][split]
        if source.kind == "local":
            return read_local_jsonl(source, self.name, rel, SPEC["hub"]["path"])
        return load_hub_rows(self.name, rel, SPEC["hub"]["path"], name=SPEC["hub"]["name"], split=split)

    def load(self, source: DataSource, split: str = "test", limit: int | None = None) -> list[Item]:
        rows = self._rows(source, split)[:limit]
        self._source = source
        return [
            Item(
                id=f"gsm8k/{split}/{i}",
                suite=self.name,
                question=r["question"],
                reference=final_answer(r["answer"]),
                meta={"solution": r["answer"]},
            )
            for i, r in enumerate(rows)
        ]

    def _train_rows(self) -> list[dict]:
        if self._train is None:
            self._train = self._rows(self._source or resolve_source(), "train")
        return self._train

    # -- prompts -------------------------------------------------------------------------------
    def _shots(self, style: dict) -> list[tuple[str, str]]:
        """(question, target) pairs for the style's exemplars."""
        n, kind = style["shots"], style.get("fewshot")
        if n == 0:
            return []
        if kind == "train":
            return [(r["question"], r["answer"]) for r in self._train_rows()[:n]]
        ending = {"cot": "The answer is {a}.", "cot_final": "The final answer is {a}"}[kind]
        return [
            (ex["question"], f"{ex['reasoning']} {ending.format(a=ex['answer'])}")
            for ex in SPEC["cot_exemplars"][:n]
        ]

    def prompt(self, item: Item, style: str) -> Prompt:
        if style not in SPEC["styles"]:
            raise ValueError(f"gsm8k: unknown style {style!r}; known: {', '.join(self.styles)}")
        st = SPEC["styles"][style]
        shots = self._shots(st)
        if st["format"] == "chat":
            messages: list[dict] = []
            for q, target in shots:
                messages += [
                    {"role": "user", "content": st["template"].format(question=q)},
                    {"role": "assistant", "content": target},
                ]
            messages.append({"role": "user", "content": st["template"].format(question=item.question)})
            return Prompt(messages=messages)
        parts = [st["template"].format(question=q) + st["target"].format(answer=t) for q, t in shots]
        parts.append(st["template"].format(question=item.question))
        return Prompt(text=SPEC["fewshot_delimiter"].join(parts))

    # -- scoring -------------------------------------------------------------------------------
    def score(self, item: Item, output: ModelOutput, style: str | None = None) -> Verdict:
        split = split_thinking(output)  # for the thinking statistics only
        v = score_text(
            lm_eval_answer(output.text or ""),
            str(item.reference),
            _strict_for(style or self.style),
            unicode_minus=self.options.unicode_minus,
        )
        details = {
            **v.details,
            **output_details(output, split),
            "style": style or self.style,
            "departures": list(self.departures),
        }
        if split.unfinished_thinking and self.options.unclosed_think_no_answer:
            return Verdict(False, None, "thinking never finished: no answer", details)
        return Verdict(v.correct, v.extracted, v.reason, details)

    def score_many(
        self, pairs: Sequence[tuple[Item, ModelOutput]], workers: int | None = None, style: str | None = None
    ) -> list[Verdict]:
        return [self.score(it, out, style) for it, out in pairs]
