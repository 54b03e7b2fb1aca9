"""Which exceptions the CLI reports as a usage/config error (exit 2) and which as a broken run
(exit 3), with a one-paragraph message instead of a traceback."""

from __future__ import annotations

from eval_harness.config import ConfigError
from eval_harness.engine.client import EndpointError
from eval_harness.engine.server import ServerError
from eval_harness.model_source import ModelNotFound
from eval_harness.paths import PathError
from eval_harness.runner import PathNotVerified
from eval_harness.store import StoreError
from eval_harness.suites import DataMissingError

USAGE_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    PathError,
    ModelNotFound,
    StoreError,
    DataMissingError,
    FileNotFoundError,
    ValueError,
)
RUN_ERRORS: tuple[type[BaseException], ...] = (ServerError, EndpointError, PathNotVerified)
