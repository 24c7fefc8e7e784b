"""Jobs: the :class:`JobSpec` a user submits, its validation, and parsing from TOML or a dict.

A job file is one ``[job]`` table (sub-tables ``[job.model]``, ``[job.hyper]``,
``[job.async_params]`` and ``[job.policy]``)::

    [job]
    dataset = "digits"
    algorithm = "sgd"
    target_accuracy = 0.9
    aggregation = "auto"          # sync | async | auto
    [job.model]
    hidden = [32]
    [job.hyper]
    lr = 0.05

Unknown keys anywhere are refused (:class:`~eddl.leader.errors.JobSpecError`), so a typo never
silently falls back to a default. ``model`` and ``hyper`` are handed to the algorithm factory of
``eddl.learn`` as they are; the coordinator checks them by building the algorithm at submission.
"""

from __future__ import annotations

import math
import re
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

from eddl.leader.errors import JobSpecError
from eddl.leader.policy import PolicyConfig

__all__ = [
    "AGGREGATIONS",
    "ASYNC_RULES",
    "DISTRIBUTIONS",
    "JobSpec",
    "load_job_file",
    "parse_job_toml",
]

Aggregation = Literal["sync", "async", "auto"]
AsyncRuleName = Literal["fedbuff", "fedasync", "eddl-mix"]
Distribution = Literal["dynamic", "static"]
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)
ASYNC_RULES: tuple[str, ...] = get_args(AsyncRuleName)
DISTRIBUTIONS: tuple[str, ...] = get_args(Distribution)

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class JobSpec:
    """Everything the leader needs to run one training job.

    Stopping: after ``rounds`` model versions, or once the test accuracy reaches
    ``target_accuracy``, whichever comes first; ``max_epochs`` passes over the training set
    bound the job in any case.
    """

    job_id: str
    dataset: str = "digits"
    algorithm: str = "sgd"
    model: Mapping[str, Any] = field(default_factory=dict)
    hyper: Mapping[str, Any] = field(default_factory=dict)
    rounds: int | None = None
    target_accuracy: float | None = None
    max_epochs: float = 20.0
    aggregation: Aggregation = "auto"
    async_rule: AsyncRuleName = "fedbuff"
    async_params: Mapping[str, Any] = field(default_factory=dict)
    max_staleness: int = 8
    distribution: Distribution = "dynamic"
    task_seconds: float = 1.0
    round_deadline: float = 10.0
    min_task_samples: int = 8
    max_task_samples: int = 8192
    default_task_samples: int = 64
    local_epochs: int = 1
    seed: int = 0
    eval_every: int = 1
    checkpoint_every: int = 1
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def __post_init__(self) -> None:
        _check(
            bool(_JOB_ID.match(self.job_id)),
            f"job_id {self.job_id!r} must be 1-64 of [A-Za-z0-9._-], not starting with . _ -",
        )
        _check(bool(self.dataset), "dataset must be named")
        _check(bool(self.algorithm), "algorithm must be named")
        _check(self.rounds is None or self.rounds >= 1, "rounds must be >= 1")
        _check(
            self.target_accuracy is None or 0.0 < self.target_accuracy <= 1.0,
            "target_accuracy must be in (0, 1]",
        )
        _check(
            self.rounds is not None or self.target_accuracy is not None,
            "give rounds or target_accuracy (or both)",
        )
        _check(math.isfinite(self.max_epochs) and self.max_epochs > 0, "max_epochs must be > 0")
        _check(self.aggregation in AGGREGATIONS, f"aggregation must be one of {AGGREGATIONS}")
        _check(self.async_rule in ASYNC_RULES, f"async_rule must be one of {ASYNC_RULES}")
        _check(self.distribution in DISTRIBUTIONS, f"distribution must be one of {DISTRIBUTIONS}")
        _check(self.max_staleness >= 0, "max_staleness must be >= 0")
        _check(
            math.isfinite(self.task_seconds) and self.task_seconds > 0, "task_seconds must be > 0"
        )
        _check(
            math.isfinite(self.round_deadline) and self.round_deadline > self.task_seconds,
            "round_deadline must be longer than task_seconds",
        )
        _check(
            1 <= self.min_task_samples <= self.max_task_samples,
            "need 1 <= min_task_samples <= max_task_samples",
        )
        _check(
            self.min_task_samples <= self.default_task_samples <= self.max_task_samples,
            "default_task_samples must lie in [min_task_samples, max_task_samples]",
        )
        _check(self.local_epochs >= 1, "local_epochs must be >= 1")
        _check(self.eval_every >= 1, "eval_every must be >= 1")
        _check(self.checkpoint_every >= 1, "checkpoint_every must be >= 1")

    # -- conversions --------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, job_id: str | None = None) -> JobSpec:
        """Build a spec from a ``[job]`` table; ``job_id`` (or a fresh one) fills a missing id."""
        if not isinstance(raw, Mapping):
            raise JobSpecError(f"a job must be a table, got {type(raw).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise JobSpecError(f"job: unknown key(s) {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for name, value in raw.items():
            values[name] = _coerce(name, value)
        if "job_id" not in values:
            values["job_id"] = job_id or f"job-{uuid.uuid4().hex[:12]}"
        try:
            return cls(**values)
        except JobSpecError:
            raise
        except (TypeError, ValueError) as exc:
            raise JobSpecError(f"job: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """A JSON- and TOML-safe mapping that :meth:`from_mapping` reads back to an equal spec."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, PolicyConfig):
                out[f.name] = value.to_dict()
            elif isinstance(value, Mapping):
                out[f.name] = _plain(value)
            elif value is not None:
                out[f.name] = value
        return out

    def with_id(self, job_id: str) -> JobSpec:
        return replace(self, job_id=job_id)


def parse_job_toml(text: str, *, job_id: str | None = None) -> JobSpec:
    """Parse a job file's text (a single ``[job]`` table)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise JobSpecError(f"job file is not valid TOML: {exc}") from exc
    extra = sorted(set(raw) - {"job"})
    if extra:
        raise JobSpecError(f"job file: unknown table(s) {extra}; expected only [job]")
    if "job" not in raw:
        raise JobSpecError("job file has no [job] table")
    return JobSpec.from_mapping(raw["job"], job_id=job_id)


def load_job_file(path: str | Path, *, job_id: str | None = None) -> JobSpec:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise JobSpecError(f"cannot read job file {p}: {exc}") from exc
    return parse_job_toml(text, job_id=job_id)


# -- helpers -----------------------------------------------------------------------------
_INTS = {
    "rounds",
    "max_staleness",
    "min_task_samples",
    "max_task_samples",
    "default_task_samples",
    "local_epochs",
    "seed",
    "eval_every",
    "checkpoint_every",
}
_FLOATS = {"target_accuracy", "max_epochs", "task_seconds", "round_deadline"}
_STRS = {"job_id", "dataset", "algorithm", "aggregation", "async_rule", "distribution"}
_TABLES = {"model", "hyper", "async_params"}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise JobSpecError(f"job: {message}")


def _coerce(name: str, value: Any) -> Any:
    where = f"job.{name}"
    if name in _INTS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise JobSpecError(f"{where}: expected an integer, got {value!r}")
        return value
    if name in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise JobSpecError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise JobSpecError(f"{where}: must be finite, got {value!r}")
        return float(value)
    if name in _STRS:
        if not isinstance(value, str):
            raise JobSpecError(f"{where}: expected a string, got {value!r}")
        return value
    if name in _TABLES:
        if not isinstance(value, Mapping):
            raise JobSpecError(f"{where}: expected a table, got {type(value).__name__}")
        _check_plain(value, where)
        return _plain(value)
    if name == "policy":
        if isinstance(value, PolicyConfig):
            return value
        if not isinstance(value, Mapping):
            raise JobSpecError(f"{where}: expected a table, got {type(value).__name__}")
        try:
            return PolicyConfig.from_mapping(value)
        except ValueError as exc:
            raise JobSpecError(f"{where}: {exc}") from exc
    raise JobSpecError(f"{where}: unknown key")  # pragma: no cover - guarded by from_mapping


def _check_plain(value: Any, where: str) -> None:
    """Only TOML-representable values: they are stored as JSON and sent over the wire."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise JobSpecError(f"{where}: keys must be strings, got {k!r}")
            _check_plain(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise JobSpecError(f"{where}: must be finite, got {value!r}")
    elif not isinstance(value, str | int | float | bool):
        raise JobSpecError(f"{where}: unsupported value {value!r}")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
