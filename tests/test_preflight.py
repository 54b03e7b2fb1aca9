"""Fail fast: whatever can be checked before a server starts is checked before the first one starts, so
a bad `custom:` target, a missing model or missing data costs seconds, not an arm served in full."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from eval_harness.cli import EXIT_USAGE, main


def _config(tmp_path: Path, **over) -> Path:
    cfg = {
        "name": "pre",
        "paths": ["native", "triton"],
        "models": [{"name": "qwen3-toy", "path": "builtin:qwen3-toy"}],
        "suites": {"toy-arith": {"limit": {"smoke": 4}}},
        **over,
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(tmp_path: Path, cfg: Path, *extra: str) -> tuple[int, float]:
    t0 = time.monotonic()
    code = main(["run", str(cfg), "--out", str(tmp_path / "runs"), *extra])
    return code, time.monotonic() - t0


def _no_arm_started(tmp_path: Path) -> bool:
    return not list((tmp_path / "runs").glob("*/*/*/server.log"))


@pytest.mark.parametrize(
    ("over", "words"),
    [
        ({"paths": ["native", "custom:no_such_module_xyz:fn"]}, "cannot import module 'no_such_module_xyz'"),
        ({"paths": ["native", "custom:eval_harness.paths:NO_SUCH"]}, "has no callable 'NO_SUCH'"),
        ({"models": [{"name": "m", "path": "/nonexistent/model"}]}, "is not a directory here"),
        ({"models": [{"name": "m", "path": "builtin:no-such-tiny"}]}, "unknown builtin model"),
        ({"paths": ["native"]}, "nothing to compare"),  # smoke has no A/A arms
    ],
)
def test_bad_input_fails_before_any_server(tmp_path: Path, capsys, over: dict, words: str) -> None:
    code, seconds = _run(tmp_path, _config(tmp_path, **over))
    assert code == EXIT_USAGE
    assert words in capsys.readouterr().err
    assert _no_arm_started(tmp_path)


def test_missing_data_fails_before_any_server(tmp_path: Path, capsys) -> None:
    cfg = _config(tmp_path, suites={"gsm8k": {"limit": {"smoke": 4}}})
    code, _ = _run(tmp_path, cfg, "--data-dir", str(tmp_path / "empty"))
    assert code == EXIT_USAGE
    assert "gsm8k" in capsys.readouterr().err
    assert _no_arm_started(tmp_path)


@pytest.mark.parametrize(
    ("suites", "words"),
    [
        ({"toy-arith": {"limit": {"smoke": -1}}}, "limits must be at least 1"),
        ({"toy-arith": {"limit": {"smoke": 0}}}, "limits must be at least 1"),
    ],
)
def test_negative_limits_are_config_errors(tmp_path: Path, capsys, suites: dict, words: str) -> None:
    code, _ = _run(tmp_path, _config(tmp_path, suites=suites))
    assert code == EXIT_USAGE and words in capsys.readouterr().err


def test_attach_options_are_checked(tmp_path: Path, capsys) -> None:
    cfg = _config(tmp_path)
    assert _run(tmp_path, cfg, "--counts-dir", f"triton={tmp_path}")[0] == EXIT_USAGE
    assert "no --endpoint attaches 'triton'" in capsys.readouterr().err
    shared = ["--endpoint", "native=http://h:1", "--endpoint", "triton=http://h:2"]
    counts = ["--counts-dir", f"native={tmp_path}", "--counts-dir", f"triton={tmp_path}"]
    assert _run(tmp_path, cfg, *shared, *counts)[0] == EXIT_USAGE
    assert "share one counts directory" in capsys.readouterr().err
    assert _run(tmp_path, cfg, "--endpoint", "nonsense=http://h:1")[0] == EXIT_USAGE
    assert "neither a path nor an arm" in capsys.readouterr().err


def test_a_custom_target_with_the_wrong_signature_fails_before_any_server(tmp_path: Path, capsys) -> None:
    # `eval_harness.paths.parse_path` imports fine but takes one argument, not the kernel's six
    code, _ = _run(tmp_path, _config(tmp_path, paths=["native", "custom:eval_harness.paths:parse_path"]))
    assert code == EXIT_USAGE
    assert "parse_path" in capsys.readouterr().err
    assert _no_arm_started(tmp_path)
