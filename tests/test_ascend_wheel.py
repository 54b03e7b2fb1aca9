"""The Ascend switch (`eval_harness/plugin/ascend.py`) against the REAL vllm-ascend 0.23.0.post1 sources.

vllm-ascend needs torch_npu and Ascend hardware to import, so its sources are read, never imported: every
function, global, op registration and config key the plugin relies on is found by parsing the files with
`ast`, and compared with what the plugin (and the fake in tests/fakes/, which the behavioural tests run
against) assumes.

Getting the sources: PyPI has only an sdist of 0.23.0.post1, and `pip download` of an sdist prepares its
metadata, which runs vllm-ascend's build (setuptools_scm, torch and more as build requirements; minutes, or
a failure without them). So the sdist is fetched the way pip finds it, from the package index's JSON
simple page (PEP 691), checked against the pinned sha256 and cached in pytest's cache. The test skips,
saying why, only when that download fails.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import os
import tarfile
import urllib.request
from pathlib import Path

import pytest
import torch

from eval_harness.kernels.rope import rope_forward_triton
from eval_harness.plugin import ascend

VERSION = "0.23.0.post1"
SDIST = f"vllm_ascend-{VERSION}.tar.gz"
SHA256 = "a3b9f4a5dd7aa50c37e03d1f35937c4ae5aeacc49b734cac74d59ce5757738e1"
INDEX = os.environ.get("ROPE_EVAL_PYPI_SIMPLE", "https://pypi.org/simple")
FAKES = Path(__file__).resolve().parent / "fakes"
FILES = (
    "vllm_ascend/ops/__init__.py",
    "vllm_ascend/ops/rotary_embedding.py",
    "vllm_ascend/ops/register_custom_ops.py",
    "vllm_ascend/ops/triton/rope.py",
    "vllm_ascend/ascend_config.py",
    "vllm_ascend/compilation/graph_fusion_pass_manager.py",
    "vllm_ascend/compilation/passes/qknorm_rope_fusion_pass.py",
    "vllm_ascend/utils.py",
)


def _download(dest: Path) -> None:
    req = urllib.request.Request(
        f"{INDEX}/vllm-ascend/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        files = json.load(resp)["files"]
    (entry,) = [f for f in files if f["filename"] == SDIST]
    with urllib.request.urlopen(entry["url"], timeout=300) as resp:
        data = resp.read()
    if hashlib.sha256(data).hexdigest() != SHA256:
        raise AssertionError(f"{SDIST} from {INDEX} does not have the pinned sha256 {SHA256}")
    dest.write_bytes(data)


@pytest.fixture(scope="module")
def sources(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    cache = getattr(request.config, "cache", None)
    where = cache.mkdir("vllm-ascend") if cache is not None else tmp_path_factory.mktemp("vllm-ascend")
    sdist = where / SDIST
    if not sdist.exists() or hashlib.sha256(sdist.read_bytes()).hexdigest() != SHA256:
        try:
            _download(sdist)
        except (OSError, ValueError, KeyError) as exc:  # URLError is an OSError
            pytest.skip(f"cannot download {SDIST} from {INDEX}: {exc}")
    out = {}
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            rel = member.name.split("/", 1)[-1]
            if rel in FILES:
                out[rel] = tar.extractfile(member).read().decode()
    missing = set(FILES) - set(out)
    assert not missing, f"{SDIST} lacks {sorted(missing)}"
    return out


def tree(sources: dict[str, str], rel: str) -> ast.Module:
    return ast.parse(sources[rel], filename=rel)


def function(module: ast.Module | ast.ClassDef, name: str) -> ast.FunctionDef:
    found = [n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == name]
    assert found, f"no function {name}"
    return found[0]


def klass(module: ast.Module, name: str) -> ast.ClassDef:
    found = [n for n in module.body if isinstance(n, ast.ClassDef) and n.name == name]
    assert found, f"no class {name}"
    return found[0]


def params(fn: ast.FunctionDef) -> list[tuple[str, object]]:
    """(name, default) of every parameter; `...` where there is no default."""
    args = fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
    positional = fn.args.posonlyargs + fn.args.args
    defaults = [...] * (len(positional) - len(fn.args.defaults)) + list(fn.args.defaults)
    defaults += [d if d is not None else ... for d in fn.args.kw_defaults]
    return [
        (a.arg, ast.literal_eval(d) if d is not ... else ...) for a, d in zip(args, defaults, strict=True)
    ]


def dotted(node: ast.AST) -> str:
    return ast.unparse(node)


def calls(node: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Call)]


def test_rope_forward_oot_has_the_parameters_the_wrapper_assumes(sources: dict[str, str]) -> None:
    fn = function(tree(sources, "vllm_ascend/ops/rotary_embedding.py"), "rope_forward_oot")
    assert tuple(name for name, _ in params(fn)) == ascend.ROPE_FORWARD_OOT_PARAMS
    assert dict(params(fn))["offsets"] is None  # the wrapper reads it as args[0] or the keyword


def _schema(fn: ast.FunctionDef) -> str:
    """The op schema vLLM's direct_register_custom_op infers from this `def` (torch.library.infer_schema):
    the def line compiled with its body dropped."""
    stub = ast.Module(
        [ast.FunctionDef(**{**fn.__dict__, "name": "f", "body": [ast.Pass()], "decorator_list": []})], []
    )
    namespace: dict = {"torch": torch}
    exec(compile(ast.fix_missing_locations(stub), fn.name, "exec"), namespace)
    return torch.library.infer_schema(namespace["f"], mutates_args=())


def test_the_fake_registers_the_real_op_schema(sources: dict[str, str]) -> None:
    real = function(tree(sources, "vllm_ascend/ops/rotary_embedding.py"), "rope_forward_oot")
    fake = function(
        ast.parse((FAKES / "vllm_ascend/ops/rotary_embedding.py").read_text()), "_rope_forward_oot_023"
    )
    assert _schema(fake) == _schema(real)
    assert params(fake) == params(real)


def test_has_triton_is_the_module_global_rope_forward_oot_reads(sources: dict[str, str]) -> None:
    mod = tree(sources, "vllm_ascend/ops/rotary_embedding.py")
    imports = [n for n in mod.body if isinstance(n, ast.ImportFrom) and n.module == "vllm.triton_utils"]
    assert any(alias.name == "HAS_TRITON" for n in imports for alias in n.names)
    fn = function(mod, "rope_forward_oot")
    names = [n for n in ast.walk(fn) if isinstance(n, ast.Name) and n.id == "HAS_TRITON"]
    assert names and all(isinstance(n.ctx, ast.Load) for n in names), "read at call time, never assigned"
    # its Triton branch calls rope_forward_triton with the keywords our Ascend-style wrapper takes
    (call,) = [c for c in calls(fn) if dotted(c.func) == "rope_forward_triton"]
    ours = set(inspect.signature(rope_forward_triton).parameters)
    assert {k.arg for k in call.keywords} <= ours


def test_rope_forward_triton_has_our_wrappers_signature(sources: dict[str, str]) -> None:
    fn = function(tree(sources, "vllm_ascend/ops/triton/rope.py"), "rope_forward_triton")
    ours = [
        (p.name, ... if p.default is inspect.Parameter.empty else p.default)
        for p in inspect.signature(rope_forward_triton).parameters.values()
    ]
    assert params(fn) == ours


def test_npu_rotary_embedding_is_registered_from_rope_forward_oot(sources: dict[str, str]) -> None:
    mod = tree(sources, "vllm_ascend/ops/register_custom_ops.py")
    imports = [n for n in mod.body if isinstance(n, ast.ImportFrom) and n.module == MODULE]
    assert any(a.name == "rope_forward_oot" for n in imports for a in n.names), "bound at import"
    (reg,) = [
        c
        for c in calls(mod)
        if dotted(c.func) == "direct_register_custom_op"
        and any(k.arg == "op_name" and ast.literal_eval(k.value) == ascend.OP for k in c.keywords)
    ]
    kw = {k.arg: k.value for k in reg.keywords}
    assert dotted(kw["op_func"]) == "rope_forward_oot"
    assert ast.literal_eval(kw["dispatch_key"]) in ascend._KEYS
    assert ast.literal_eval(kw["mutates_args"]) == []  # returns new tensors: the wrapper clones q and k
    # importing any vllm_ascend.ops module runs ops/__init__.py, which imports the registration first
    init = tree(sources, "vllm_ascend/ops/__init__.py")
    assert "vllm_ascend.ops.register_custom_ops" in {
        a.name for n in init.body if isinstance(n, ast.Import) for a in n.names
    }


MODULE = ascend.MODULE


def _reaches_op(cls: ast.ClassDef) -> bool:
    targets = {f"torch.ops.vllm.{ascend.OP}", "AscendRotaryEmbedding.forward_oot"}
    forwards = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name.startswith("forward")]
    return any(dotted(c.func) in targets for f in forwards for c in calls(f))


def test_switched_classes_are_exactly_those_whose_forward_calls_the_op(sources: dict[str, str]) -> None:
    mod = tree(sources, "vllm_ascend/ops/rotary_embedding.py")
    rope_classes = [n for n in mod.body if isinstance(n, ast.ClassDef) and "Rotary" in n.name]
    reaching = {c.name for c in rope_classes if _reaches_op(c)}
    assert reaching == set(ascend.SWITCHED_CLASSES)
    # vllm-ascend's others (MRoPE, ApplyRotaryEmb) exist and stay unswitched: coverage reports them
    assert {"AscendMRotaryEmbedding", "AscendApplyRotaryEmb"} <= {c.name for c in rope_classes} - reaching


def test_switched_classes_replace_vllms_rope_classes(sources: dict[str, str]) -> None:
    """vllm-ascend registers its classes under vLLM's names; the switched ones cover RotaryEmbedding, YaRN
    and DeepSeek scaling. vLLM's other RoPE classes (Llama3, linear or dynamic NTK scaling, ...) are not
    replaced on Ascend: their modules run vLLM's forward_oot and count as unswitched."""
    utils = tree(sources, "vllm_ascend/utils.py")
    mapping = [
        n.value
        for n in ast.walk(utils)
        if isinstance(n, ast.Assign) and any(dotted(t) == "REGISTERED_ASCEND_OPS" for t in n.targets)
    ]
    # one table for A2/A3, another for 310P (whose RoPE classes the plugin does not switch)
    table = next(
        m
        for m in mapping
        if isinstance(m, ast.Dict) and any(dotted(v) == "AscendRotaryEmbedding" for v in m.values)
    )
    registered = {ast.literal_eval(k): dotted(v) for k, v in zip(table.keys, table.values, strict=True)}
    assert {
        registered[n]
        for n in ("RotaryEmbedding", "YaRNScalingRotaryEmbedding", "DeepseekScalingRotaryEmbedding")
    } == set(ascend.SWITCHED_CLASSES)


def test_fuse_qknorm_rope_is_the_switch_the_configs_turn_off(sources: dict[str, str]) -> None:
    """On by default, read from additional_config["ascend_compilation_config"], and its pattern replaces
    `vllm::npu_rotary_embedding` (the op the plugin reroutes) with the fused kernel: with it on, neither arm
    runs its path where the pattern matches."""
    cfg = tree(sources, "vllm_ascend/ascend_config.py")
    (init,) = [function(klass(cfg, "AscendCompilationConfig"), "__init__")]
    assert dict(params(init))["fuse_qknorm_rope"] is True
    reads = [c for c in calls(cfg) if dotted(c.func) == "additional_config.get"]
    assert any(ast.literal_eval(c.args[0]) == "ascend_compilation_config" for c in reads)
    manager = tree(sources, "vllm_ascend/compilation/graph_fusion_pass_manager.py")
    gets = [c for c in calls(manager) if dotted(c.func) == "self.ascend_compilation_config.get"]
    assert any(ast.literal_eval(c.args[0]) == "fuse_qknorm_rope" for c in gets)
    fusion = tree(sources, "vllm_ascend/compilation/passes/qknorm_rope_fusion_pass.py")
    assert any(dotted(c.func) == f"torch.ops.vllm.{ascend.OP}" for c in calls(fusion))
