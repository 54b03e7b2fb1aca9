"""Turn a config's model reference into something `vllm serve` can load.

`builtin:<name>` names a tiny model that rope-eval builds itself (seconds, no network) into a
cache directory, or one of the toy models trained on toy-arith and committed under
eval_harness/toy/weights/ (checked against their recorded sha256s first); anything else is a
local directory or a hub id, passed through.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

BUILTIN = "builtin:"


class ModelNotFound(FileNotFoundError):
    pass


def default_models_dir() -> Path:
    env = os.environ.get("ROPE_EVAL_MODELS")
    return Path(env) if env else Path.home() / ".cache" / "rope-eval" / "models"


def _built_version(spec_file: Path) -> int | None:
    try:
        return json.loads(spec_file.read_text()).get("build_version")
    except (OSError, ValueError):
        return None


def resolve_model(ref: str, models_dir: Path | None = None) -> str:
    if ref.startswith(BUILTIN):
        from eval_harness.models.builder import SPEC_FILE, build_model
        from eval_harness.models.specs import BUILD_VERSION, SPECS, TOY_SPECS

        name = ref.removeprefix(BUILTIN)
        if name in TOY_SPECS:  # trained on toy-arith and committed: served from the repo, never built
            from eval_harness.toy import checksums, weights_dir

            if not (weights_dir(name) / SPEC_FILE).is_file():
                raise ModelNotFound(f"toy model {name!r} is missing from {weights_dir(name)}")
            return str(checksums.verify(weights_dir(name).parent, name))
        if name not in SPECS:
            known = ", ".join([*SPECS, *TOY_SPECS])
            raise ModelNotFound(f"unknown builtin model {name!r}; known: {known}")
        root = models_dir or default_models_dir()
        if _built_version(root / name / SPEC_FILE) != BUILD_VERSION:
            build_model(name, root)  # missing, or built by an older builder
        return str(root / name)
    path = Path(ref).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if ref.startswith(("/", ".", "~")) or ref.count("/") != 1:
        raise ModelNotFound(f"model {ref!r} is not a directory here, and not a hub id (org/name)")
    return ref  # a hub id: vLLM resolves it (offline clusters need it in the HF cache)
