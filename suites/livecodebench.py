"""LiveCodeBench code generation: QwQ/LCB prompt, code from the last fenced block, judged in the
sandbox (eval_harness.sandbox) with LCB's comparison rules; pass@1 via the unbiased estimator."""

from __future__ import annotations

import base64
import io
import json
import pickle
import zlib
from collections.abc import Sequence

from eval_harness.sandbox import Job, JudgeResult, Limits, TestCase, judge_many

from .base import Item, ModelOutput, Prompt, Verdict, load_spec, output_details, split_thinking
from .data import DataSource, load_hub_rows, read_local_jsonl
from .metrics import avg_at_k, mean_pass_at_k, pass_at_k

__all__ = ["LiveCodeBench", "extract_code", "pass_at_k", "mean_pass_at_k", "avg_at_k", "REPORT_NOTE"]

SPEC = load_spec("livecodebench")
REPORT_NOTE = SPEC["report_note"]


def extract_code(text: str) -> str | None:
    """Body of the last complete ``` fenced block (any language tag), or None. An unclosed fence at
    the end (truncated output) is ignored."""
    last, current = None, None
    for line in text.split("\n"):
        fence = line.strip().startswith("```")
        if current is None:
            if fence:
                current = []
        elif fence and line.strip().strip("`").strip() == "":
            last, current = "\n".join(current), None
        else:
            current.append(line)
    return last


class _StrOnly(pickle.Unpickler):
    """LCB pickles a JSON string; refuse anything that would import or call."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def decode_tests(field: str | list | None) -> list[dict]:
    """`public_test_cases` is JSON; `private_test_cases` is JSON or base64(zlib(pickle(JSON)))."""
    if not field:
        return []
    if isinstance(field, list):
        return field
    try:
        return json.loads(field)
    except ValueError:
        raw = zlib.decompress(base64.b64decode(field))
        return json.loads(_StrOnly(io.BytesIO(raw)).load())


class LiveCodeBench:
    name = "livecodebench"
    styles = tuple(SPEC["styles"])
    default_style = SPEC["default_style"]
    report_note = REPORT_NOTE

    def __init__(self, limits: Limits | None = None, workers: int | None = None) -> None:
        self.limits = limits or Limits(**SPEC["limits"])
        self.workers = workers
        self.hide_paths: tuple[str, ...] = ()  # the local data dir, so solutions cannot read tests

    # -- data ----------------------------------------------------------------------------------
    def _rows(self, source: DataSource) -> list[dict]:
        hub = SPEC["hub"]
        if source.kind == "local":
            self.hide_paths = (str(source.root),)
            return read_local_jsonl(source, self.name, SPEC["local"], hub["path"])
        files = [f"hf://datasets/{hub['path']}/{f}" for f in hub["files_by_release"][SPEC["release"]]]
        what = f"{hub['path']} ({SPEC['release']}: {', '.join(hub['files_by_release'][SPEC['release']])})"
        rows = load_hub_rows(self.name, SPEC["local"], "json", data_files=files, split="train", what=what)
        start, end = SPEC["date_window"]
        return [r for r in rows if start <= str(r["contest_date"])[:10] < end]

    def load(self, source: DataSource, split: str = "test", limit: int | None = None) -> list[Item]:
        items = []
        for r in self._rows(source)[:limit]:
            public = decode_tests(r.get("public_test_cases"))
            hidden = decode_tests(r.get("private_test_cases"))
            meta = (
                json.loads(r["metadata"]) if isinstance(r.get("metadata"), str) else (r.get("metadata") or {})
            )
            functional = bool(r.get("starter_code")) or any(t.get("testtype") == "functional" for t in public)
            reference = {
                "mode": "functional" if functional else "stdin",
                "func_name": meta.get("func_name"),
                "tests": [{"input": t["input"], "output": t["output"]} for t in public + hidden],
                "n_public": len(public),
                "n_hidden": len(hidden),
            }
            items.append(
                Item(
                    id=f"lcb/{r['question_id']}",
                    suite=self.name,
                    question=r["question_content"],
                    reference=reference,
                    meta={
                        k: r.get(k)
                        for k in ("platform", "difficulty", "contest_id", "contest_date", "starter_code")
                    },
                )
            )
        return items

    @staticmethod
    def test_scope(items: Sequence[Item]) -> str:
        """ "public" when no item has hidden tests: reports must then carry REPORT_NOTE."""
        return "public+hidden" if any(it.reference["n_hidden"] for it in items) else "public"

    # -- prompts -------------------------------------------------------------------------------
    def prompt(self, item: Item, style: str) -> Prompt:
        if style not in SPEC["styles"]:
            raise ValueError(f"livecodebench: unknown style {style!r}; known: {', '.join(self.styles)}")
        starter = item.meta.get("starter_code") or ""
        fmt = SPEC["format_functional"].format(starter_code=starter) if starter else SPEC["format_stdin"]
        text = SPEC["template"].format(question=item.question, format=fmt)
        if SPEC["styles"][style]["format"] == "chat":
            return Prompt(messages=[{"role": "user", "content": text}])
        return Prompt(text=text)

    # -- scoring -------------------------------------------------------------------------------
    def _job(self, item: Item, code: str) -> Job:
        ref = item.reference
        tests = tuple(TestCase(t["input"], t["output"]) for t in ref["tests"])
        return Job(code=code, tests=tests, mode=ref["mode"], func_name=ref["func_name"])

    def score(self, item: Item, output: ModelOutput, style: str | None = None) -> Verdict:
        return self.score_many([(item, output)], workers=1)[0]

    def score_many(
        self, pairs: Sequence[tuple[Item, ModelOutput]], workers: int | None = None, style: str | None = None
    ) -> list[Verdict]:
        """Judge all pairs through one bounded sandbox pool (default: one sandbox per CPU core)."""
        prepared = []
        for item, output in pairs:
            split = split_thinking(output)
            code = None if split.unfinished_thinking else extract_code(split.answer)
            prepared.append((item, code, output_details(output, split)))
        todo = [(i, self._job(item, code)) for i, (item, code, _) in enumerate(prepared) if code is not None]
        results = judge_many(
            [j for _, j in todo], self.limits, workers=workers or self.workers, hide_paths=self.hide_paths
        )
        by_index: dict[int, JudgeResult] = {i: r for (i, _), r in zip(todo, results, strict=True)}
        verdicts = []
        for i, (item, code, details) in enumerate(prepared):
            scope = "public+hidden" if item.reference["n_hidden"] else "public"
            details = {**details, "test_scope": scope}
            if code is None:
                why = (
                    "thinking never finished: no answer"
                    if details["unfinished_thinking"]
                    else "no code block"
                )
                verdicts.append(Verdict(False, None, why, {**details, "sandbox": None}))
                continue
            r = by_index[i]
            details.update(
                sandbox=str(r.status),
                passed=r.passed,
                total=r.total,
                isolation=r.isolation,
                tests=[{"status": str(t.status), "time_s": t.time_s, "reason": t.reason} for t in r.tests],
            )
            verdicts.append(Verdict(r.status == "pass", code, r.reason, details))
        return verdicts
