"""The harness's exceptions, and which of them the CLI reports as a usage/config error (exit 2) or as a
broken run (exit 3), with a one-paragraph message instead of a traceback.

The run-time exceptions are defined here, not beside the code that raises them, so the CLI can name them
without importing the engine (aiohttp) or the runner (torch via the plugin): `diff`, `gate` and `report`
stay fast.
"""

from __future__ import annotations

from eval_harness.config import ConfigError
from eval_harness.model_source import ModelNotFound
from eval_harness.paths import PathError
from eval_harness.proof import CountsError
from eval_harness.suites.data import DataMissingError


class StoreError(RuntimeError):
    """A corrupt or mismatched run directory."""


class ServerError(RuntimeError):
    """The server failed to start, or died; the message carries the end of its log."""


class EndpointError(RuntimeError):
    """The endpoint kept failing after retries (dead server, bad request)."""


class PathNotVerified(RuntimeError):
    """Call counts do not show the requested RoPE path in every process."""


USAGE_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    PathError,
    ModelNotFound,
    StoreError,
    DataMissingError,
    CountsError,
    FileNotFoundError,
    ValueError,
)
RUN_ERRORS: tuple[type[BaseException], ...] = (ServerError, EndpointError, PathNotVerified)
