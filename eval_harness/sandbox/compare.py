"""Output comparison, done in the harness so that expected outputs never enter the sandbox.

Follows LiveCodeBench's grading rules (lcb_runner/evaluation/testing_util.py), re-implemented:
- stdin problems: strip the whole output, split on newlines, strip each line; the line counts must be
  equal, and each line must match exactly or, failing that, as whitespace-separated `Decimal` values
  (so `1.0` equals `1`, `1e3` equals `1000`; no epsilon: LCB's "tolerance" is exact decimal equality).
- functional problems: the returned value, with a top-level tuple turned into a list, must `==` the
  JSON-decoded expected output. The sandbox sends the value in a tagged JSON form (see
  `launcher.encode_value`) so nested tuples, int-keyed dicts and sets keep their Python identity.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(tok) for tok in line.split()]
    except (InvalidOperation, ValueError):
        return None


def stdin_matches(output: str, expected: str) -> tuple[bool, str]:
    """LCB's stdin rule; returns (match, reason)."""
    got, want = _lines(output), _lines(expected)
    if len(got) != len(want):
        return False, f"output has {len(got)} lines, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if g == w:
            continue
        dg, dw = _decimals(g), _decimals(w)
        if dg is None or dw is None or dg != dw:
            return False, f"line {i + 1}: {g[:80]!r} != {w[:80]!r}"
    return True, "match"


class _Opaque:
    """A value the sandbox could not express in JSON (custom object, ndarray): equal to nothing."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return self.text


def decode_value(x: Any) -> Any:
    """Inverse of the launcher's tagged encoding."""
    if isinstance(x, list):
        return [decode_value(v) for v in x]
    if not isinstance(x, dict):
        return x
    if "$int" in x:
        return int(x["$int"], 16)
    if "$tuple" in x:
        return tuple(decode_value(v) for v in x["$tuple"])
    if "$set" in x:
        return frozenset(_hashable(decode_value(v)) for v in x["$set"])
    if "$dict" in x:
        return {_hashable(decode_value(k)): decode_value(v) for k, v in x["$dict"]}
    return _Opaque(x.get("$repr", "?"))


def _hashable(v: Any) -> Any:
    return tuple(_hashable(e) for e in v) if isinstance(v, list) else v


def functional_matches(result_json: str | None, expected: str) -> tuple[bool, str]:
    """LCB's call-based rule on the sandbox's tagged JSON result."""
    if result_json is None:
        return False, "no return value"
    try:
        got = decode_value(json.loads(result_json))
    except ValueError as e:
        return False, f"undecodable return value: {e}"
    want = json.loads(expected)
    if got == want:
        return True, "match"
    return False, f"returned {_short(got)}, expected {_short(want)}"


def _short(v: Any, n: int = 120) -> str:
    s = repr(v)
    return s if len(s) <= n else s[: n // 2] + "..." + s[-n // 2 :]
