"""Run configuration: one YAML per model or profile, validated by pydantic.

An error names the key at fault (pydantic's `loc`), so a typo in a 200-line release config is
a one-line fix, not a stack trace.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from eval_harness.paths import PathError, parse_path

Profile = Literal["smoke", "nightly", "release"]
LM_EVAL_PREFIX = "lm-eval:"  # a suite entry that runs an lm-eval task through lm-eval itself
PROFILES: tuple[Profile, ...] = ("smoke", "nightly", "release")


class ConfigError(ValueError):
    """A config that cannot be run; the message names the file and the key."""


# vLLM flags rope-eval sets itself from the config: one given in serve_args would fight them.
MANAGED_FLAGS = frozenset({"--model", "--speculative-config", "--host", "--served-model-name"})


def no_managed_flags(args: list[str]) -> list[str]:
    bad = [a for a in args if a.split("=", 1)[0] in MANAGED_FLAGS]
    if bad:
        raise ValueError(f"{bad} are set by rope-eval from the config; remove them from serve_args")
    return args


class Strict(BaseModel):
    """A config section: unknown keys are errors (a typo must not be ignored), values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SamplingConfig(Strict):
    max_tokens: int = Field(256, gt=0)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = -1
    # samples per problem; k > 1 needs temperature > 0 to mean anything
    k: int = Field(1, gt=0)
    logprobs: int = Field(5, ge=0, le=20)  # top-k per generated step, for the L2 diff

    @model_validator(mode="after")
    def _k_needs_sampling(self) -> SamplingConfig:
        if self.k > 1 and self.temperature == 0.0:
            raise ValueError("k > 1 samples with temperature 0 are identical; set temperature > 0")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class SuiteConfig(Strict):
    style: str = "chat-0shot"
    sampling: SamplingConfig = SamplingConfig()
    # problems per profile; None means the whole split
    limit: dict[Profile, int | None] = Field(
        default_factory=lambda: {"smoke": 10, "nightly": 200, "release": None}
    )
    margin: float = Field(0.02, gt=0.0, le=1.0)  # TOST equivalence margin on accuracy
    # departures from the reference scorer (lm-eval, math-verify), off unless named here; the report names
    # every one that is on, e.g. {unicode_minus: true} for gsm8k
    options: dict[str, bool] = Field(default_factory=dict)
    num_fewshot: int | None = Field(None, ge=0)  # `lm-eval:` suites: the task's own count unless given

    @property
    def chat(self) -> bool:
        return self.style.startswith("chat")

    @field_validator("limit")
    @classmethod
    def _positive_limits(cls, v: dict[str, int | None]) -> dict[str, int | None]:
        bad = {k: n for k, n in v.items() if n is not None and n < 1}
        if bad:
            raise ValueError(f"limits must be at least 1 problem (or null for the whole split): {bad}")
        return v


class LogprobConfig(Strict):
    """L1: teacher-forced scoring of the reference's sequences under every arm."""

    top_k: int = Field(5, ge=1, le=20)
    # longest probe text (chars) for models that run no suite; its tail fills the context window
    probe_chars: int = Field(12000, ge=200)
    sequences: dict[Profile, int] = Field(
        default_factory=lambda: {"smoke": 16, "nightly": 128, "release": 512}
    )

    @field_validator("sequences")
    @classmethod
    def _positive(cls, v: dict[str, int]) -> dict[str, int]:
        if any(n < 1 for n in v.values()):
            raise ValueError(f"L1 needs at least 1 sequence per profile: {v}")
        return v


class DraftConfig(Strict):
    path: str
    method: Literal["eagle3", "eagle"] = "eagle3"
    num_speculative_tokens: int = Field(3, ge=1, le=16)


class ModelEntry(Strict):
    name: str
    # local directory, hub id, or `builtin:<tiny-model>` (built on demand by `rope-eval models`)
    path: str
    draft: DraftConfig | None = None
    serve_args: list[str] = Field(default_factory=list)
    suites: list[str] | None = None  # None: every configured suite; []: L1 only

    @field_validator("serve_args")
    @classmethod
    def _no_managed_flags(cls, v: list[str]) -> list[str]:
        return no_managed_flags(v)


class ProfileConfig(Strict):
    # A/A arms: the baseline served again on a fresh server, its requests in a shuffled order, to measure
    # the noise floor (true = 1)
    aa: int = Field(0, ge=0)
    concurrency: int = Field(8, gt=0)


class RunConfig(Strict):
    name: str
    models: list[ModelEntry] = Field(min_length=1)
    paths: list[str] = Field(min_length=1)  # the first is the baseline
    # The yardstick every path is measured against, served like every other arm: `rope64` (the
    # `reference` path: RoPE in float64, rounded once; scales to any model) or `fp32` (the baseline path
    # with the whole model in float32: a stricter oracle where the model fits)
    reference: Literal["rope64", "fp32"] = "rope64"
    serve_args: list[str] = Field(default_factory=list)  # for every model, before its own
    suites: dict[str, SuiteConfig] = Field(default_factory=dict)
    l1: LogprobConfig = LogprobConfig()
    profiles: dict[Profile, ProfileConfig] = Field(
        default_factory=lambda: {
            "smoke": ProfileConfig(),
            "nightly": ProfileConfig(aa=1),
            "release": ProfileConfig(aa=1),
        }
    )
    seed: int = 1234
    startup_timeout: float = Field(900.0, gt=0)

    @field_validator("serve_args")
    @classmethod
    def _no_managed_flags(cls, v: list[str]) -> list[str]:
        return no_managed_flags(v)

    @field_validator("paths")
    @classmethod
    def _known_paths(cls, v: list[str]) -> list[str]:
        for p in v:
            try:
                parse_path(p)
            except PathError as exc:
                raise ValueError(str(exc)) from None
        if len(set(v)) != len(v):
            raise ValueError(f"paths repeat: {v}; an A/A run is configured with profiles.<name>.aa")
        if "reference" in v:
            raise ValueError("`reference` is served in every run; choose its kind with the `reference` key")
        return v

    @field_validator("suites")
    @classmethod
    def _known_suites(cls, v: dict[str, SuiteConfig]) -> dict[str, SuiteConfig]:
        from eval_harness.suites import suite_names

        unknown = sorted(n for n in set(v) - set(suite_names()) if not n.startswith(LM_EVAL_PREFIX))
        if unknown:
            raise ValueError(
                f"unknown suites {unknown}; known: {suite_names()}, or {LM_EVAL_PREFIX}<task name or YAML>"
            )
        return v

    @model_validator(mode="after")
    def _something_to_compare(self) -> RunConfig:
        # The baseline alone is a run only when A/A arms measure its noise floor (`--path BASELINE --aa N`).
        if len(self.paths) < 2 and not any(p.aa > 0 for p in self.profiles.values()):
            raise ValueError("paths: at least 2 (the baseline first), or A/A arms (`aa: N` in a profile)")
        return self

    @model_validator(mode="after")
    def _model_suites_exist(self) -> RunConfig:
        for m in self.models:
            missing = sorted(set(m.suites or []) - set(self.suites))
            if missing:
                raise ValueError(f"model {m.name!r} lists suites {missing} that are not under `suites`")
        return self

    @property
    def baseline(self) -> str:
        return self.paths[0]

    def profile(self, name: Profile) -> ProfileConfig:
        return self.profiles.get(name, ProfileConfig(aa=int(name != "smoke")))

    def suites_for(self, model: ModelEntry) -> list[str]:
        return list(self.suites) if model.suites is None else list(model.suites)

    def lm_eval_suites(self, model: ModelEntry) -> list[str]:
        return [s for s in self.suites_for(model) if s.startswith(LM_EVAL_PREFIX)]


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


def load_config(path: Path) -> RunConfig:
    """Read and validate a config; environment variables in strings (`${VAR}`) are expanded."""
    try:
        raw = yaml.safe_load(os.path.expandvars(Path(path).read_text()))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"config {path} is invalid:\n{_format_errors(exc)}") from None
