"""GSM8K: lm-eval-compatible prompts and strict/flexible extraction (suites/gsm8k.yaml)."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .base import Item, ModelOutput, Prompt, Verdict, load_spec, output_details, split_thinking
from .data import DataSource, load_hub_rows, read_local_jsonl, resolve_source

SPEC = load_spec("gsm8k")
_UNICODE_MINUS = str.maketrans({"\u2212": "-", "\u2012": "-", "\u2013": "-"})


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


def score_text(answer_text: str, reference: str, strict: Extractor = HASH_STRICT) -> Verdict:
    """Score an answer text (thinking already removed) against a reference (a number, or a full
    GSM8K solution ending in `#### N`). Reusable by any suite whose answers follow the same rules.
    Extension over lm-eval: Unicode minus and dashes count as '-' (a no-op on ASCII text)."""
    text = answer_text.translate(_UNICODE_MINUS)
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

    def __init__(self, style: str | None = None) -> None:
        self.style = style or self.default_style
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
        split = split_thinking(output)
        v = score_text(split.answer, str(item.reference), _strict_for(style or self.style))
        details = {**v.details, **output_details(output, split), "style": style or self.style}
        if split.unfinished_thinking:
            return Verdict(False, None, "thinking never finished: no answer", details)
        return Verdict(v.correct, v.extracted, v.reason, details)

    def score_many(
        self, pairs: Sequence[tuple[Item, ModelOutput]], workers: int | None = None, style: str | None = None
    ) -> list[Verdict]:
        return [self.score(it, out, style) for it, out in pairs]
