"""A federated run in one process: N simulated clients, R synchronous rounds, no network.

Each round every client copies the global model, trains locally on its samples for the round,
and returns a :class:`~eddl.learn.aggregation.ClientUpdate`; the algorithm's synchronous rule
(FedAvg for float models, TIFeD's truncating integer mean) makes the next global model, which
is evaluated on the dataset's test split.

Samples per round: without ``buffer``, a client trains each round on its whole shard (one
round = one pass). With ``buffer`` set, it keeps a buffer of its ``buffer`` newest samples and
adds its next ``new_per_round`` samples to it each round (default: ``buffer``, i.e. a fresh
buffer every round); the buffer starts empty at each pass over the shard. TIFeD's set-up is
buffer 50 with 10 new samples per round: 1,000 samples per client make 100 rounds per pass.
In single-layer mode client ``c`` trains layer ``c mod L`` and uploads only that layer.

``sync_params`` are the synchronous rule's options, as in a job's ``[job.sync_params]``: a server
optimizer on each round's mean delta (``server_opt``, ``server_lr``, ``server_momentum``...;
float models only). With ``target_accuracy`` the run stops after the first round that reaches
it, and :attr:`RunResult.samples_to_target` says how many samples that took.

``lsgd-q8`` fine-tunes a trained model: the run first trains a float model with L-SGD for
``pretrain_rounds`` federated rounds, quantizes it to int8 (the accuracy before and after
quantization is reported), then fine-tunes the int8 model for ``rounds`` rounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from eddl.data import load_dataset, partition
from eddl.learn.aggregation import AggregationError, ClientUpdate, SyncRule, make_rule
from eddl.learn.algorithms import Algorithm, Q8Algorithm, default_model, get_algorithm
from eddl.learn.params import Params, clone

__all__ = ["ALGO_DEFAULTS", "FederatedConfig", "RoundResult", "RunResult", "run_federated"]

# Local epochs and per-round buffer for each algorithm unless the user sets them: the papers'
# set-ups (TIFeD: buffer 50, mini-batch 25, 5 local epochs; L-SGD: one pass, batch 1).
ALGO_DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": {"local_epochs": 1, "buffer": None},
    "lsgd": {"local_epochs": 1, "buffer": None},
    "lsgd-q8": {"local_epochs": 1, "buffer": None},
    "tifed": {"local_epochs": 5, "buffer": 50, "new_per_round": 10},
    "tifed-single": {"local_epochs": 5, "buffer": 50, "new_per_round": 10},
}


@dataclass(frozen=True)
class FederatedConfig:
    algo: str = "lsgd"
    dataset: str = "digits"
    clients: int = 4
    rounds: int = 5
    partition: str = "iid"
    seed: int = 0
    local_epochs: int | None = None
    buffer: int | None = None
    new_per_round: int | None = None
    model: dict[str, Any] | None = None
    hyper: dict[str, Any] = field(default_factory=dict)
    dataset_path: str | None = None
    pretrain_rounds: int = 2
    sync_params: dict[str, Any] = field(default_factory=dict)
    target_accuracy: float | None = None

    def __post_init__(self) -> None:
        if self.target_accuracy is not None and not 0.0 < self.target_accuracy <= 1.0:
            raise ValueError(f"target_accuracy must be in (0, 1], got {self.target_accuracy}")
        if self.algo not in ALGO_DEFAULTS:
            raise ValueError(f"unknown algorithm {self.algo!r}; known: {', '.join(ALGO_DEFAULTS)}")
        for name in ("clients", "rounds", "pretrain_rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.local_epochs is not None and self.local_epochs < 1:
            raise ValueError("local_epochs must be >= 1")
        if self.buffer is not None and self.buffer < 1:
            raise ValueError("buffer must be >= 1")
        if self.new_per_round is not None and self.new_per_round < 1:
            raise ValueError("new_per_round must be >= 1")


@dataclass(frozen=True)
class RoundResult:
    round: int
    accuracy: float
    seconds: float
    samples: int


@dataclass(frozen=True)
class RunResult:
    algo: str
    dataset: str
    clients: int
    rounds: int
    accuracy: float
    best_accuracy: float
    train_state_bytes: int
    model_bytes: int
    seconds: float
    samples: int
    partition: str
    seed: int
    local_epochs: int
    buffer: int | None
    new_per_round: int | None
    aggregation: dict[str, Any]
    history: list[RoundResult]
    # Samples trained when test accuracy first reached target_accuracy (None: not reached).
    samples_to_target: int | None = None
    # lsgd-q8 only: accuracy of the float model after pre-training, and of its int8 copy.
    pretrain: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _round_slice(shard: np.ndarray, buffer: int | None, new: int | None, rnd: int) -> np.ndarray:
    """The samples a client trains on in round ``rnd`` (see the module docstring)."""
    if buffer is None or buffer >= len(shard):
        return shard
    step = new if new is not None else buffer
    end = (rnd * step) % len(shard) + step
    return np.take(shard, np.arange(max(0, end - buffer), end), mode="wrap")


def _client_update(
    algo: Algorithm,
    global_params: Params,
    layer: int | None,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    rng: np.random.Generator,
    version: int,
) -> tuple[ClientUpdate, int]:
    local = clone(global_params)
    trainer = algo.make_trainer(layer=layer, seed=int(rng.integers(0, 2**32)))
    stats = trainer.train(local, x, y, epochs=epochs, rng=rng)
    if layer is not None:
        local = {k: local[k] for k in (f"W{layer}", f"b{layer}")}
    return ClientUpdate(params=local, num_samples=len(y), base_version=version), stats.state_bytes


class _Rounds:
    """The federated loop over fixed client shards, for one algorithm."""

    def __init__(
        self,
        cfg: FederatedConfig,
        shards: list[np.ndarray],
        epochs: int,
        buffer: int | None,
        new_per_round: int | None,
    ) -> None:
        self.cfg, self.shards, self.epochs = cfg, shards, epochs
        self.buffer, self.new_per_round = buffer, new_per_round
        self.data = load_dataset(cfg.dataset, cfg.dataset_path)
        self.state_bytes = 0
        self.samples = 0

    def run(
        self,
        algo: Algorithm,
        params: Params,
        rounds: int,
        on_round: Callable[[RoundResult], None] | None,
        history: list[RoundResult] | None = None,
        rule: SyncRule | None = None,
        target: float | None = None,
    ) -> Params:
        if rule is None:
            plain = make_rule(algo.sync_rule_name)
            assert isinstance(plain, SyncRule)
            rule = plain
        x_train = algo.prepare_inputs(self.data.x_train)
        for rnd in range(rounds):
            t_round = time.perf_counter()
            updates = []
            for c, shard in enumerate(self.shards):
                idx = _round_slice(shard, self.buffer, self.new_per_round, rnd)
                rng = np.random.default_rng([self.cfg.seed, rnd, c])
                layer = c % algo.num_layers if algo.single_layer else None
                update, sb = _client_update(
                    algo,
                    params,
                    layer,
                    x_train[idx],
                    self.data.y_train[idx],
                    self.epochs,
                    rng,
                    rnd,
                )
                updates.append(update)
                self.state_bytes = max(self.state_bytes, sb)
                self.samples += len(idx) * self.epochs
            params = rule.aggregate(params, updates, version=rnd + 1)
            acc = algo.evaluate(params, self.data.x_test, self.data.y_test)
            result = RoundResult(rnd + 1, acc, time.perf_counter() - t_round, self.samples)
            if history is not None:
                history.append(result)
            if on_round is not None:
                on_round(result)
            if target is not None and acc >= target:
                break
        return params


def run_federated(
    cfg: FederatedConfig, on_round: Callable[[RoundResult], None] | None = None
) -> RunResult:
    """Run ``cfg`` to completion, calling ``on_round`` after each round."""
    data = load_dataset(cfg.dataset, cfg.dataset_path)
    defaults = ALGO_DEFAULTS[cfg.algo]
    epochs = cfg.local_epochs if cfg.local_epochs is not None else defaults["local_epochs"]
    buffer = cfg.buffer if cfg.buffer is not None else defaults["buffer"]
    new = cfg.new_per_round if cfg.new_per_round is not None else defaults.get("new_per_round")
    if buffer is None:
        new = None
    elif new is not None:
        new = min(new, buffer)
    model = cfg.model or default_model(cfg.algo, data.num_features, data.num_classes)
    shards = partition(cfg.partition, data.y_train, cfg.clients, cfg.seed)
    loop = _Rounds(cfg, shards, epochs, buffer, new)
    history: list[RoundResult] = []
    pretrain: dict[str, float] | None = None
    t0 = time.perf_counter()
    algo: Algorithm
    if cfg.algo == "lsgd-q8":
        hyper = dict(cfg.hyper)
        float_hyper = {k: hyper.pop(k) for k in ("lr",) if k in hyper}
        float_algo = get_algorithm("lsgd", model, float_hyper)
        float_params = loop.run(
            float_algo, float_algo.init_params(cfg.seed), cfg.pretrain_rounds, None
        )
        algo, global_params = Q8Algorithm.from_float(model, float_params, hyper)
        pretrain = {
            "rounds": float(cfg.pretrain_rounds),
            "float_accuracy": float_algo.evaluate(float_params, data.x_test, data.y_test),
            "quantized_accuracy": algo.evaluate(global_params, data.x_test, data.y_test),
        }
        loop.state_bytes = loop.samples = 0
    else:
        algo = get_algorithm(cfg.algo, model, cfg.hyper)
        global_params = algo.init_params(cfg.seed)
        if algo.single_layer and cfg.clients < algo.num_layers:
            raise ValueError(
                f"{cfg.algo} needs at least one client per layer: "
                f"{cfg.clients} clients for {algo.num_layers} layers"
            )
    model_bytes = sum(v.nbytes for v in global_params.values())
    rule = _sync_rule(cfg, algo, global_params)
    global_params = loop.run(
        algo, global_params, cfg.rounds, on_round, history, rule, cfg.target_accuracy
    )
    reached = [r.samples for r in history if r.accuracy >= (cfg.target_accuracy or 2.0)]
    return RunResult(
        algo=cfg.algo,
        dataset=cfg.dataset,
        clients=cfg.clients,
        rounds=cfg.rounds,
        accuracy=history[-1].accuracy,
        best_accuracy=max(r.accuracy for r in history),
        train_state_bytes=loop.state_bytes,
        model_bytes=model_bytes,
        seconds=time.perf_counter() - t0,
        samples=loop.samples,
        partition=cfg.partition,
        seed=cfg.seed,
        local_epochs=epochs,
        buffer=buffer,
        new_per_round=new,
        aggregation=rule.describe(),
        history=history,
        samples_to_target=reached[0] if reached else None,
        pretrain=pretrain,
    )


def _sync_rule(cfg: FederatedConfig, algo: Algorithm, params: Params) -> SyncRule:
    """The algorithm's synchronous rule with ``cfg.sync_params``, refused for integer models."""
    integer = sorted(n for n, a in params.items() if a.dtype.kind != "f")
    if cfg.sync_params and integer:
        raise AggregationError(
            f"{cfg.algo} trains an integer model and keeps TIFeD's exact integer mean; server "
            f"optimizers ({', '.join(sorted(cfg.sync_params))}) apply to float models only"
        )
    rule = make_rule(algo.sync_rule_name, **cfg.sync_params)
    assert isinstance(rule, SyncRule)
    return rule
