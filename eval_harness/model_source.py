"""Turn a config's model reference into something `vllm serve` can load.

`builtin:<name>` names a tiny model that rope-eval builds itself (seconds, no network) into a
cache directory; anything else is a local directory or a hub id, passed through.
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
        from eval_harness.models.specs import BUILD_VERSION, SPECS

        name = ref.removeprefix(BUILTIN)
        if name not in SPECS:
            raise ModelNotFound(f"unknown builtin model {name!r}; known: {', '.join(SPECS)}")
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
