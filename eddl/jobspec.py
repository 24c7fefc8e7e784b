"""Jobs: the :class:`JobSpec` a user submits, the bounds of its fields, and parsing from TOML.

A job file is one ``[job]`` table (sub-tables ``[job.model]``, ``[job.hyper]``,
``[job.sync_params]``, ``[job.async_params]`` and ``[job.policy]``)::

    [job]
    dataset = "digits"
    algorithm = "sgd"
    target_accuracy = 0.9
    aggregation = "auto"          # sync | async | auto
    [job.model]
    hidden = [32]
    [job.hyper]
    lr = 0.05

Both the ``eddl`` CLI (before it sends a job) and the leader (when it receives one) parse jobs
here, and both check the model and hyper-parameters with :func:`eddl.jobcheck.check_job`, the
code a worker builds its trainer with. Every error is a :class:`JobSpecError` whose one-line
message starts with the key at fault (``job.local_epochs: must be an int in 1..1000, got 0``).
Unknown keys anywhere are refused, so a typo never silently falls back to a default. Every
number is bounded: a job is refused at submission rather than failing on every worker.
"""

from __future__ import annotations

import math
import re
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

from eddl.policyconfig import PolicyConfig

__all__ = [
    "AGGREGATIONS",
    "ASYNC_RULES",
    "DISTRIBUTIONS",
    "INT_BOUNDS",
    "TIFED_SINGLE_TASK_SAMPLES",
    "JobSpec",
    "JobSpecError",
    "job_table",
    "load_job_file",
    "parse_job_toml",
]

Aggregation = Literal["sync", "async", "auto"]
AsyncRuleName = Literal["fedbuff", "fedasync", "fedasync-folds", "eddl-mix", "async-delta"]
Distribution = Literal["dynamic", "static"]
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)
ASYNC_RULES: tuple[str, ...] = get_args(AsyncRuleName)
DISTRIBUTIONS: tuple[str, ...] = get_args(Distribution)

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# Inclusive bounds of the integer fields. The task sizes stay within what one FetchSamples
# call may carry (the leader's default), local_epochs within the wire's uint32 and a task's
# sane length, the seed within the uint64 the wire carries and numpy's generators accept.
INT_BOUNDS: dict[str, tuple[int, int]] = {
    "rounds": (1, 10**9),
    "max_staleness": (0, 10**6),
    "min_task_samples": (1, 65536),
    "max_task_samples": (1, 65536),
    "default_task_samples": (1, 65536),
    "local_epochs": (1, 1000),
    "seed": (0, 2**63 - 1),
    "eval_every": (1, 10**6),
    "checkpoint_every": (1, 10**6),
    "max_task_failures": (1, 1000),
    "quarantine_after": (1, 1000),
}
_MAX_EPOCHS = 1e6
_MAX_TASK_SECONDS = 3600.0
_MAX_DEADLINE = 86400.0
_MAX_UPDATE_RATIO = 1e12
# The sub-tables (model, hyper, sync_params, async_params) are stored as JSON and sent to every
# worker: bounded so a spec can never be a resource problem of its own.
_MAX_DEPTH = 8
_MAX_ITEMS = 1024
_MAX_STRING = 256
_MAX_INT = 2**63 - 1


class JobSpecError(ValueError):
    """A job description is invalid: unknown key, wrong type, impossible or unbounded value.

    The message is one line and starts with the key at fault. The leader answers it with
    ``INVALID_ARGUMENT``; ``eddl submit`` prints it and exits 2.
    """

    #: Name of the ``grpc.StatusCode`` member a servicer answers with (see eddl.net.status).
    code: ClassVar[str] = "INVALID_ARGUMENT"


# ``tifed-single``'s default largest task: its integer one-layer training does not learn
# from long local passes (digits 64-32-10, lr_inv 2048: tasks of 1,000 and 1,437 samples stayed
# at chance for 100-200 versions; 250 and 500 reached 85% within 5 versions). A job that sets
# ``max_task_samples`` keeps its own.
TIFED_SINGLE_TASK_SAMPLES = 500


@dataclass(frozen=True)
class JobSpec:
    """Everything the leader needs to run one training job.

    Stopping: after ``rounds`` model versions, or once the test accuracy reaches
    ``target_accuracy``, whichever comes first; ``max_epochs`` passes over the training set
    bound the job in any case. ``max_task_failures`` tasks failing on workers in a row, with no
    update taken in between, end the job as ``failed``.
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
    # Options of the synchronous rule (fedavg's server optimizer); checked by eddl.jobcheck.
    sync_params: Mapping[str, Any] = field(default_factory=dict)
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
    max_task_failures: int = 5
    # Update sanity (eddl.leader.sanity): an update further than this many times the model's
    # norm from its base is refused; this many refusals in a row quarantine the node.
    max_update_ratio: float = 100.0
    quarantine_after: int = 3
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def __post_init__(self) -> None:
        _check(
            bool(_JOB_ID.match(self.job_id)),
            "job_id",
            f"{self.job_id!r} must be 1-64 of [A-Za-z0-9._-], not starting with . _ -",
        )
        _check(0 < len(self.dataset) <= 64, "dataset", "must be named (at most 64 characters)")
        _check(0 < len(self.algorithm) <= 64, "algorithm", "must be named (at most 64 characters)")
        for name, (low, high) in INT_BOUNDS.items():
            value = getattr(self, name)
            if value is not None:
                _check(
                    low <= value <= high,
                    name,
                    f"must be an int in {low}..{high}, got {_short(value)}",
                )
        _check(
            self.target_accuracy is None or 0.0 < self.target_accuracy <= 1.0,
            "target_accuracy",
            f"must be in (0, 1], got {self.target_accuracy}",
        )
        _check(
            self.rounds is not None or self.target_accuracy is not None,
            "rounds",
            "give rounds or target_accuracy (or both)",
        )
        _check(
            0 < self.max_epochs <= _MAX_EPOCHS,
            "max_epochs",
            f"must be in (0, {_MAX_EPOCHS:g}], got {self.max_epochs}",
        )
        _check(self.aggregation in AGGREGATIONS, "aggregation", f"must be one of {AGGREGATIONS}")
        _check(self.async_rule in ASYNC_RULES, "async_rule", f"must be one of {ASYNC_RULES}")
        _check(
            self.distribution in DISTRIBUTIONS, "distribution", f"must be one of {DISTRIBUTIONS}"
        )
        _check(
            0 < self.task_seconds <= _MAX_TASK_SECONDS,
            "task_seconds",
            f"must be in (0, {_MAX_TASK_SECONDS:g}], got {self.task_seconds}",
        )
        _check(
            self.task_seconds < self.round_deadline <= _MAX_DEADLINE,
            "round_deadline",
            f"must be longer than task_seconds and at most {_MAX_DEADLINE:g}, "
            f"got {self.round_deadline}",
        )
        _check(
            0 < self.max_update_ratio <= _MAX_UPDATE_RATIO,
            "max_update_ratio",
            f"must be in (0, {_MAX_UPDATE_RATIO:g}], got {self.max_update_ratio}",
        )
        _check(
            self.min_task_samples <= self.max_task_samples,
            "min_task_samples",
            "need min_task_samples <= max_task_samples",
        )
        _check(
            self.min_task_samples <= self.default_task_samples <= self.max_task_samples,
            "default_task_samples",
            "must lie in [min_task_samples, max_task_samples]",
        )

    # -- conversions --------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, job_id: str | None = None) -> JobSpec:
        """Build a spec from a ``[job]`` table; ``job_id`` (or a fresh one) fills a missing id."""
        if not isinstance(raw, Mapping):
            raise JobSpecError(f"job: must be a table, got {type(raw).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(str(k) for k in set(raw) - set(known))
        if unknown:
            raise JobSpecError(f"job: unknown key(s) {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for name, value in raw.items():
            values[name] = _coerce(name, value)
        if values.get("algorithm") == "tifed-single" and "max_task_samples" not in values:
            floor = values.get("min_task_samples", 1)
            if isinstance(floor, int):
                values["max_task_samples"] = max(TIFED_SINGLE_TASK_SAMPLES, floor)
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


def job_table(text: str) -> dict[str, Any]:
    """The ``[job]`` table of a job file's text, the file's only table."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise JobSpecError(f"job file is not valid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib parses nested arrays and tables recursively
        raise JobSpecError(f"job file nests values more than {_MAX_DEPTH} levels deep") from exc
    extra = sorted(set(raw) - {"job"})
    if extra:
        raise JobSpecError(
            f"job file: unknown table(s) or key(s) {extra} at the top; "
            "expected one [job] table and nothing else"
        )
    if "job" not in raw:
        raise JobSpecError("job file has no [job] table")
    table = raw["job"]
    if not isinstance(table, dict):
        raise JobSpecError(f"job: must be a table, got {type(table).__name__}")
    return table


def parse_job_toml(text: str, *, job_id: str | None = None) -> JobSpec:
    """Parse a job file's text (a single ``[job]`` table)."""
    return JobSpec.from_mapping(job_table(text), job_id=job_id)


def load_job_file(path: str | Path, *, job_id: str | None = None) -> JobSpec:
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise JobSpecError(f"cannot read job file {p}: {exc}") from exc
    return parse_job_toml(text, job_id=job_id)


# -- helpers -----------------------------------------------------------------------------
_FLOATS = {"target_accuracy", "max_epochs", "task_seconds", "round_deadline", "max_update_ratio"}
_STRS = {"job_id", "dataset", "algorithm", "aggregation", "async_rule", "distribution"}
_TABLES = {"model", "hyper", "sync_params", "async_params"}


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise JobSpecError(f"job.{key}: {message}")


def _coerce(name: str, value: Any) -> Any:
    where = f"job.{name}"
    if name in INT_BOUNDS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise JobSpecError(f"{where}: expected an integer, got {_short(value)}")
        return value
    if name in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise JobSpecError(f"{where}: expected a number, got {_short(value)}")
        if not math.isfinite(value):
            raise JobSpecError(f"{where}: must be finite, got {value!r}")
        return float(value)
    if name in _STRS:
        if not isinstance(value, str):
            raise JobSpecError(f"{where}: expected a string, got {_short(value)}")
        return value
    if name in _TABLES:
        if not isinstance(value, Mapping):
            raise JobSpecError(f"{where}: expected a table, got {type(value).__name__}")
        _check_plain(value, where, 1)
        return _plain(value)
    if name == "policy":
        if isinstance(value, PolicyConfig):
            return value
        if not isinstance(value, Mapping):
            raise JobSpecError(f"{where}: expected a table, got {type(value).__name__}")
        try:
            return PolicyConfig.from_mapping(value)
        except ValueError as exc:
            text = str(exc)
            raise JobSpecError(
                f"job.{text}" if text.startswith("policy.") else f"{where}: {text}"
            ) from exc
    raise JobSpecError(f"{where}: unknown key")  # pragma: no cover - guarded by from_mapping


def _check_plain(value: Any, where: str, depth: int) -> None:
    """Only TOML-representable values, nested and sized within bounds: they are stored as JSON
    and sent over the wire. Depth is checked before descending, so no input recurses deeply."""
    if depth > _MAX_DEPTH:
        raise JobSpecError(f"{where}: nested more than {_MAX_DEPTH} levels deep")
    if isinstance(value, Mapping | list | tuple) and len(value) > _MAX_ITEMS:
        raise JobSpecError(f"{where}: more than {_MAX_ITEMS} entries")
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str) or not 0 < len(k) <= _MAX_STRING:
                raise JobSpecError(f"{where}: keys must be short strings, got {_short(k)}")
            _check_plain(v, f"{where}.{k}", depth + 1)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]", depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise JobSpecError(f"{where}: must be finite, got {value!r}")
    elif isinstance(value, str) and len(value) > _MAX_STRING:
        raise JobSpecError(f"{where}: strings hold at most {_MAX_STRING} characters")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_INT:
        raise JobSpecError(f"{where}: integers must fit in 64 bits, got {_short(value)}")
    elif not isinstance(value, str | int | float | bool):
        raise JobSpecError(f"{where}: unsupported value {_short(value)}")


def _short(value: Any) -> str:
    """A value for a one-line message: long ones are cut."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge integer"
    return text if len(text) <= 80 else text[:77] + "..."


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
