"""Which RoPE modules a loaded model holds, and counting the ones the plugin does not switch.

Call counts alone cannot show that *every* attention layer ran the requested path: a model whose layers
mix a switched RoPE class with one the plugin does not know would still show the path's calls. So after
each model load in a worker (the target, then its draft) the plugin walks the model and records, per
model, how many modules apply RoPE and which of them are not ours; `eval_harness.proof.verify` fails an
arm on any of those. The modules not switched are also wrapped so their calls count, as
`unswitched:<Class>`.

The hook is `BaseModelLoader.load_model` (vLLM 0.26 and 0.32 alike; every loader but a few exotic ones
inherits it, and vLLM's eagle/draft proposers load through it too). vLLM shares one RoPE instance among
all layers with the same settings (`get_rope` caches them), so the walk lists modules with
`remove_duplicate=False`: each layer's reference counts as one site.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import re
from collections import Counter
from collections.abc import Callable

import torch
from torch import nn

from eval_harness.proof import UNSWITCHED_PREFIX, ModelCoverage

from . import ops
from .counters import CounterBank, CountsWriter, dp_index

logger = logging.getLogger("rope_eval.plugin")
# A RoPE class by name where it does not derive from vLLM's RoPE base (Phi3LongRoPEScaledRotaryEmbedding is
# a plain nn.Module): "Rotary", "RoPE" or "Rope" as a CamelCase word, so "European" does not match.
_ROPE_NAME = re.compile(r"(Rotary|RoPE|Rope)(?=[A-Z0-9_]|$)")
SWITCHED_ATTR = "_rope_eval_switched"  # set in the class dict of every class whose forward runs the path
_COUNTED_ATTR = "_rope_eval_counted"
# called after each model load with the model, its role and the engine's vLLM config
ModelObserver = Callable[[nn.Module, str, object], None]


def _rope_base() -> type:
    from vllm.model_executor.layers.rotary_embedding import base

    return getattr(base, "RotaryEmbeddingBase", base.RotaryEmbedding)


def is_rope(module: nn.Module) -> bool:
    return isinstance(module, _rope_base()) or bool(_ROPE_NAME.search(type(module).__name__))


FUSED_PLAIN_ATTR = "rope_eval_plain"  # the fused path's RoPE classes (plugin/fused.py), counted as its own


def is_switched(module: nn.Module) -> bool:
    # The class's own dict, not inherited: a model's subclass of a switched class may bring its own forward.
    own = vars(type(module))
    return bool(own.get(SWITCHED_ATTR, False) or own.get(FUSED_PLAIN_ATTR, False))


def rope_sites(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every module reference that applies RoPE, outermost only (a RoPE module's
    helpers are part of it)."""
    sites: list[tuple[str, nn.Module]] = []
    inside: str | None = None
    for name, module in model.named_modules(remove_duplicate=False):
        if inside is not None and name.startswith(inside + "."):
            continue
        inside = None
        if name and is_rope(module):
            sites.append((name, module))
            inside = name
    return sites


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
    return None


def count_calls(module: nn.Module, name: str) -> None:
    """Make every call of this module count under `name` (an instance attribute: the class and other
    instances are untouched; `nn.Module.__call__` looks `forward` up on the instance first)."""
    if vars(module).get(_COUNTED_ATTR):
        return
    inner = module.forward

    def forward(*args, **kwargs):
        marker = _first_tensor(args, kwargs)  # `positions`, the first argument of every RoPE forward
        if marker is not None:
            ops.mark(marker, name)
        return inner(*args, **kwargs)

    module.forward = forward
    setattr(module, _COUNTED_ATTR, True)


def coverage(model: nn.Module, role: str) -> ModelCoverage:
    """Record the model's RoPE sites, and count the calls of those the plugin does not switch."""
    sites = rope_sites(model)
    unswitched = {}
    for name, module in sites:
        if not is_switched(module):
            cls = type(module).__name__
            unswitched[name] = cls
            count_calls(module, UNSWITCHED_PREFIX + cls)
    classes = Counter(type(m).__name__ for _, m in sites)
    return ModelCoverage(role, type(model).__name__, len(sites), dict(classes), unswitched)


def role_of(vllm_config: object, model_config: object) -> str:
    """`draft` for a model loaded with a model config other than the engine's own (vLLM's proposers pass
    the draft's), else `target`."""
    own = getattr(vllm_config, "model_config", None)
    return "target" if model_config is None or own is None or model_config is own else "draft"


def _wrap(original: Callable, observe: ModelObserver) -> Callable:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def load_model(self, *args, **kwargs):
        model = original(self, *args, **kwargs)
        try:
            bound = signature.bind(self, *args, **kwargs).arguments
            config = bound.get("vllm_config")
            observe(model, role_of(config, bound.get("model_config")), config)
        except Exception:
            # The count file then lacks this model's coverage, which fails verification: loud enough,
            # and the server keeps serving.
            logger.exception("rope-eval: could not record the RoPE layers of the loaded model")
        return model

    load_model._rope_eval = True  # type: ignore[attr-defined]
    return load_model


def install_load_hook(observe: ModelObserver) -> list[str]:
    """Wrap `load_model` of vLLM's base loader and of any loaded subclass that defines its own."""
    from vllm.model_executor.model_loader.base_loader import BaseModelLoader

    hooked, todo = [], [BaseModelLoader]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        own = vars(cls).get("load_model")
        if own is not None and not getattr(own, "_rope_eval", False):
            cls.load_model = _wrap(own, observe)
            hooked.append(cls.__name__)
    return hooked


def install(bank: CounterBank, writer: CountsWriter | None, also: ModelObserver | None = None) -> None:
    """Record each loaded model's coverage in the count file, and start every forked child's counts
    from zero (vLLM may fork its engine after loading plugins; the fork keeps the parent's counters
    and loses its flush thread)."""

    def observe(model: nn.Module, role: str, vllm_config: object) -> None:
        found = coverage(model, role)
        if also is not None:
            also(model, role, vllm_config)
        if writer is not None:
            writer.add_model(id(model), found, dp_index(vllm_config))
        logger.info(
            "rope-eval: %s model %s: %d RoPE layers, %d not switched",
            role,
            found.architecture,
            found.sites,
            len(found.unswitched),
        )

    install_load_hook(observe)

    def after_fork_in_child() -> None:
        bank.reset()
        if writer is not None:
            writer.after_fork()

    os.register_at_fork(after_in_child=after_fork_in_child)
