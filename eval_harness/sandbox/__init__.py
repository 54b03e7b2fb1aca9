"""Code sandbox for judging generated solutions (LiveCodeBench). See docs/architecture.md (sandbox row).

Generated code never runs in the harness process: `judge` starts one launcher process tree per
solution, inside namespaces when the host allows them (`judge.detect`)."""

from .compare import functional_matches, stdin_matches
from .isolation import Isolation
from .judge import (
    Job,
    JudgeResult,
    Limits,
    SandboxError,
    Status,
    TestCase,
    TestOutcome,
    detect,
    judge,
    judge_many,
)

__all__ = [
    "Isolation",
    "Job",
    "JudgeResult",
    "Limits",
    "SandboxError",
    "Status",
    "TestCase",
    "TestOutcome",
    "detect",
    "functional_matches",
    "judge",
    "judge_many",
    "stdin_matches",
]
