"""AIME 2024 + 2025 with the Qwen3 prompt; answer = last \\boxed{} (nested braces), compared as an
integer, with math-verify deciding equivalence when the box holds an expression (suites/aime.yaml)."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

from .base import Item, ModelOutput, Prompt, Verdict, load_spec, output_details, split_thinking
from .data import DataMissingError, DataSource, load_hub_rows, read_local_jsonl

SPEC = load_spec("aime")
_BOX = re.compile(r"\\(?:boxed|fbox)")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox), matching nested braces. None when there is none
    or the last one is unclosed (truncated), as in lm-eval; `\\boxed 70` (no braces) also counts."""
    starts = [m.end() for m in _BOX.finditer(text)]
    if not starts:
        return None
    rest = text[starts[-1] :]
    body = rest.lstrip()
    if not body.startswith("{"):
        m = re.match(r"\s+([^\s$]+)", rest)
        return m.group(1) if m else None
    depth = 0
    for i, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return body[1:i].strip()
    return None


_STRIP = [
    (re.compile(r"\\text\{([^{}]*)\}"), r"\1"),
    (re.compile(r"\\(?:mathrm|textbf|mathbf)\{([^{}]*)\}"), r"\1"),
    (re.compile(r"\^\{?\\circ\}?"), ""),
    (re.compile(r"\\[,;:!]|\\ |\$|\s"), ""),
]


def as_integer(answer: str) -> int | None:
    """`025`, `25`, `25.0`, `{,}`-less `1,000`, `\\text{25}` -> int; anything else -> None."""
    s = answer
    for pattern, repl in _STRIP:
        s = pattern.sub(repl, s)
    s = s.replace("{,}", "").replace(",", "")
    if re.fullmatch(r"[+-]?\d+(?:\.0*)?", s):
        return int(float(s)) if "." in s else int(s)
    return None


def math_equal(answer: str, reference: int) -> bool:
    """math-verify equivalence. Its timeouts use SIGALRM, which only the main thread may set."""
    from math_verify import parse, verify

    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold = parse(f"${reference}$", parsing_timeout=timeout)
        pred = parse(f"${answer}$", parsing_timeout=timeout)
        return bool(pred) and verify(gold, pred, timeout_seconds=timeout)
    except Exception:
        return False


def score_answer(answer_text: str, reference: int) -> Verdict:
    boxed = last_boxed(answer_text)
    if boxed is None:
        return Verdict(False, None, "no \\boxed{} answer", {})
    value = as_integer(boxed)
    if value is not None:
        ok = value == int(reference)
        return Verdict(
            ok, boxed, f"integer {value} {'==' if ok else '!='} {reference}", {"method": "integer"}
        )
    ok = math_equal(boxed, int(reference))
    how = "equivalent to" if ok else "not equivalent to"
    return Verdict(ok, boxed, f"math-verify: {boxed!r} {how} {reference}", {"method": "math-verify"})


class AIME:
    name = "aime"
    styles = tuple(SPEC["styles"])
    default_style = SPEC["default_style"]

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
        if split.unfinished_thinking:
            return Verdict(False, None, "thinking never finished: no answer", details)
        v = score_answer(split.answer, item.reference)
        return Verdict(v.correct, v.extracted, v.reason, {**v.details, **details})

    def score_many(
        self, pairs: Sequence[tuple[Item, ModelOutput]], workers: int | None = None, style: str | None = None
    ) -> list[Verdict]:
        # sequential: math-verify's timeouts need the main thread
        return [self.score(it, out, style) for it, out in pairs]
