"""A federated meta-learning run in one process: TinyMetaFed and Reptile, no network.

Each round the server samples ``devices_per_round`` of the training devices; every sampled
device downloads the shared layers of the meta-model ``θ``, runs
:func:`~eddl.learn.tinymetafed.device_round` and uploads its delta. The uploads and downloads
go through the real wire records — dense ``Tensor`` records for Reptile, ``SparseTensor``
records (:mod:`eddl.net.sparse`) for TinyMetaFed — which the server decodes with their checks
before the Reptile update (:func:`~eddl.learn.reptile.reptile_update`) with the round's ε.
Bytes per device per round are the serialised sizes of those records.

After the last round (and after each round listed in ``checkpoints``) the held-out devices run
the few-shot evaluation (:func:`~eddl.learn.fewshot.few_shot_evaluate`) at each ``k`` in
``shots``; the checkpoints make :attr:`MetaResult.curve`, the score against rounds.

Tasks: ``sine`` (regression, MSE), ``characters`` (N-way digits from ``digits`` or
``mnist-10k``, accuracy) and ``presence`` (synthetic room sensors, accuracy); see
:mod:`eddl.data.metatasks` and :mod:`eddl.data.presence`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from eddl.data.metatasks import TaskSet, character_tasks, sine_tasks
from eddl.data.presence import presence_tasks
from eddl.learn.fewshot import FewShotResult, few_shot_evaluate
from eddl.learn.metamodel import Classifier, MetaModel, Regressor
from eddl.learn.metaoptions import META_ALGORITHMS, MetaOptions
from eddl.learn.model import MLPSpec
from eddl.learn.params import Params
from eddl.learn.reconstruction import LayerSplit
from eddl.learn.reptile import MetaLrSchedule, reptile_update
from eddl.learn.tinymetafed import DeviceUpdate, device_round
from eddl.net.sparse import decode_sparse_update, encode_sparse, wire_bytes
from eddl.net.tensors import array_from_tensor, tensor_from_array

__all__ = [
    "META_TASKS",
    "MetaConfig",
    "MetaResult",
    "MetaRound",
    "make_model",
    "make_tasks",
    "run_meta",
]

META_TASKS: tuple[str, ...] = ("sine", "characters", "presence")


@dataclass(frozen=True)
class MetaConfig:
    algo: str = "tinymetafed"
    task: str = "sine"
    dataset: str = "digits"
    train_devices: int = 20
    held_out_devices: int = 10
    rounds: int = 20
    seed: int = 0
    hyper: dict[str, Any] = field(default_factory=dict)
    n_way: int = 5
    samples: int = 10
    """Training samples per device (per class for characters)."""
    shots: tuple[int, ...] = ()
    """k values evaluated at the end; empty: the options' ``shots``."""
    hidden: tuple[int, ...] = ()
    """Hidden widths; empty: the task's default."""
    checkpoints: tuple[int, ...] = ()
    """Rounds (1..rounds) after which the few-shot evaluation also runs (``MetaResult.curve``)."""

    def __post_init__(self) -> None:
        if self.algo not in META_ALGORITHMS:
            raise ValueError(f"unknown meta algorithm {self.algo!r}; known: {META_ALGORITHMS}")
        if self.task not in META_TASKS:
            raise ValueError(f"unknown task {self.task!r}; known: {', '.join(META_TASKS)}")
        for name in ("train_devices", "held_out_devices", "rounds", "samples"):
            value = getattr(self, name)
            if not 1 <= value <= 100_000:
                raise ValueError(f"{name} must be in 1..100000, got {value}")
        if any(not 1 <= k <= 1000 for k in self.shots):
            raise ValueError(f"shots must lie in 1..1000, got {list(self.shots)}")
        if len(self.checkpoints) > 1000 or any(not 1 <= r <= self.rounds for r in self.checkpoints):
            raise ValueError(
                f"checkpoints must be at most 1000 rounds in 1..{self.rounds}, "
                f"got {list(self.checkpoints)[:10]}"
            )


@dataclass(frozen=True)
class MetaRound:
    round: int
    eps: float
    devices: int
    upload_bytes: float
    """Mean bytes one sampled device uploaded this round (serialised records)."""
    download_bytes: float
    seconds: float


@dataclass(frozen=True)
class MetaResult:
    algo: str
    task: str
    metric: str
    options: dict[str, Any]
    few_shot: dict[int, FewShotResult]
    upload_bytes: float
    """Mean upload per device per round over the run."""
    download_bytes: float
    dense_bytes: int
    """The full model as dense records: what plain Reptile moves each way."""
    history: list[MetaRound]
    seconds: float
    curve: dict[int, dict[int, FewShotResult]] = field(default_factory=dict)
    """Few-shot results after each checkpoint round: ``curve[round][k]``."""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["few_shot"] = {str(k): asdict(v) for k, v in self.few_shot.items()}
        out["curve"] = {
            str(r): {str(k): asdict(v) for k, v in row.items()} for r, row in self.curve.items()
        }
        return out


def make_tasks(cfg: MetaConfig) -> TaskSet:
    if cfg.task == "sine":
        return sine_tasks(
            cfg.train_devices, cfg.held_out_devices, seed=cfg.seed, samples=cfg.samples
        )
    if cfg.task == "presence":
        return presence_tasks(
            cfg.train_devices, cfg.held_out_devices, seed=cfg.seed, samples=cfg.samples
        )
    return character_tasks(
        cfg.dataset,
        cfg.train_devices,
        cfg.held_out_devices,
        seed=cfg.seed,
        n_way=cfg.n_way,
        samples=cfg.samples,
    )


def make_model(tasks: TaskSet, hidden: Sequence[int] = ()) -> MetaModel:
    """The task's model: tanh MLP, sigmoid/BCE head for classes, linear head for sine."""
    if not tasks.classification:
        return Regressor((tasks.num_inputs, *(hidden or (40, 40)), tasks.num_outputs))
    widths = tuple(hidden or ((40, 32) if tasks.num_inputs > 32 else (32, 16)))
    spec = MLPSpec(
        (tasks.num_inputs, *widths, tasks.num_outputs),
        ("tanh",) * len(widths) + ("sigmoid",),
        "bce",
    )
    return Classifier(spec)


def _upload(update: DeviceUpdate, opts: MetaOptions, theta: Params) -> tuple[Params, int]:
    """The device's records, their size, and what the server decodes from them."""
    shapes = {n: theta[n].shape for n in update.delta}
    if update.selected is not None:
        records = [
            encode_sparse(n, s.shape, s.indices, s.values, value_dtype=opts.values)
            for n, s in update.selected.items()
        ]
        decoded = decode_sparse_update(records, shapes)
        return {n: r.dense() for n, r in decoded.items()}, wire_bytes(records)
    tensors = [tensor_from_array(n, a) for n, a in update.delta.items()]
    return {t.name: array_from_tensor(t) for t in tensors}, wire_bytes(tensors)


def run_meta(cfg: MetaConfig, on_round: Callable[[MetaRound], None] | None = None) -> MetaResult:
    """Run ``cfg`` to completion (see the module docstring)."""
    t0 = time.perf_counter()
    tasks = make_tasks(cfg)
    model = make_model(tasks, cfg.hidden)
    opts = MetaOptions.from_hyper(cfg.algo, cfg.hyper, model.num_layers)
    split = LayerSplit(model.num_layers, opts.local_layers)
    schedule = MetaLrSchedule(opts.meta_lr, opts.meta_lr_final, cfg.rounds)
    full = model.init_params(cfg.seed)
    theta = split.shared(full)
    dense_bytes = wire_bytes(tensor_from_array(n, a) for n, a in full.items())
    history: list[MetaRound] = []
    curve: dict[int, dict[int, FewShotResult]] = {}
    shots = cfg.shots or (opts.shots,)

    def evaluate(params: Params) -> dict[int, FewShotResult]:
        return {
            k: few_shot_evaluate(
                model,
                split,
                params,
                tasks.held_out,
                k=k,
                opts=opts,
                seed=cfg.seed,
                training_ids=tasks.training_ids,
            )
            for k in shots
        }

    per_round = min(opts.devices_per_round, len(tasks.train))
    residuals: dict[int, Params] = {}  # error feedback: each device's unsent entries
    for rnd in range(cfg.rounds):
        t_round = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, 0xF00D, rnd])
        chosen = rng.choice(len(tasks.train), size=per_round, replace=False)
        download = wire_bytes(tensor_from_array(n, a) for n, a in theta.items())
        deltas, weights, up = [], [], 0
        for i in sorted(chosen.tolist()):
            task = tasks.train[i]
            update = device_round(
                model,
                split,
                theta,
                task.x_train,
                task.y_train,
                opts,
                seed=cfg.seed * 1_000_003 + rnd * 10_007 + task.task_id,
                residual=residuals.get(i),
            )
            if update.residual is not None:
                residuals[i] = update.residual
            delta, nbytes = _upload(update, opts, theta)
            deltas.append(delta)
            weights.append(update.samples)
            up += nbytes
        eps = schedule.at(rnd)
        theta = reptile_update(theta, deltas, weights, eps)
        result = MetaRound(
            rnd + 1, eps, per_round, up / per_round, float(download), time.perf_counter() - t_round
        )
        history.append(result)
        if on_round is not None:
            on_round(result)
        if rnd + 1 in cfg.checkpoints:
            curve[rnd + 1] = evaluate(theta)
    few = curve[cfg.rounds] if cfg.rounds in curve else evaluate(theta)
    return MetaResult(
        algo=cfg.algo,
        task=tasks.name,
        metric=model.metric,
        options=asdict(opts),
        few_shot=few,
        upload_bytes=float(np.mean([r.upload_bytes for r in history])),
        download_bytes=float(np.mean([r.download_bytes for r in history])),
        dense_bytes=dense_bytes,
        history=history,
        seconds=time.perf_counter() - t0,
        curve=curve,
    )
