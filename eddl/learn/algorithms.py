"""Training algorithms by name: what a leader, a worker or ``eddl train`` needs to run one.

``get_algorithm(name, model, hyper)`` returns an :class:`Algorithm` that knows how to make the
initial global model, a local :class:`~eddl.learn.trainer.Trainer`, the trainer's input
representation of uint8 pixels, how to evaluate, and which synchronous aggregation rule fits:

=============== ====================================== ======================= ==========
name            model                                  inputs                  sync rule
=============== ====================================== ======================= ==========
``sgd``         float32 MLP (``MLPSpec``)              ``x / 255`` float32     fedavg
``lsgd``        float32 MLP, batch 1                   ``x / 255`` float32     fedavg
``lsgd-q8``     int8 fixed point, from a float model   uint8 (``x >> 1``)      fedavg
``tifed``       int32 TIFeD, every client all layers   uint8 (``x - 128``)     intmean
``tifed-single`` int32 TIFeD, one layer per client     uint8 (``x - 128``)     intmean
``reptile``     float32 MLP, L-SGD inner loop          ``x / 255`` float32     reptile
``tinymetafed`` float32 MLP, L-SGD, top-P + local head ``x / 255`` float32     reptile
=============== ====================================== ======================= ==========

``model`` is a mapping: ``{"sizes": [...], "activations": [...], "loss": ...}`` for float
models, ``{"sizes": [...]}`` for TIFeD; :func:`default_model` gives the papers' topologies.
``hyper`` holds ``lr`` and ``batch_size`` (float), ``lr_shift`` (lsgd-q8), ``lr_inv``,
``batch_size``, ``feedback_seed`` (TIFeD). Unknown keys are refused, and so are values no
trainer could use (``lr`` must be in (0, 10], ``batch_size`` in 1..65536): workers build their
algorithms here, and so do the leader and the CLI when they check a job (``eddl.jobcheck``),
so a job a worker would refuse is refused at submission. :meth:`Algorithm.param_bytes` and
:meth:`Algorithm.buffer_bytes` say what a model and its trainer need, before anything is
allocated. ``reptile`` and ``tinymetafed`` take the meta-learning options of
:mod:`eddl.learn.metaoptions` in ``hyper`` (each bounded there). FedAvg of integer models
is the exact sample-weighted mean truncated toward zero
(see ``eddl.learn.aggregation``).

The :class:`Algorithm` base, :class:`AlgorithmError` and the shared checks of hyper-parameters
and pixels are in :mod:`eddl.learn.algorithm_base` (re-exported here).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from eddl.learn import lsgd_q8, tifed
from eddl.learn import model as mlp
from eddl.learn.algorithm_base import (
    MAX_BATCH_SIZE,
    MAX_LR,
    Algorithm,
    AlgorithmError,
    _check_keys,
    _check_pixels,
    _hyper_int,
    _hyper_number,
)
from eddl.learn.metaoptions import META_ALGORITHMS, MetaOptions, MetaOptionsError
from eddl.learn.params import Params
from eddl.learn.trainer import Trainer

__all__ = [
    "ALGORITHMS",
    "MAX_BATCH_SIZE",
    "MAX_LR",
    "Algorithm",
    "AlgorithmError",
    "FloatAlgorithm",
    "MetaAlgorithm",
    "Q8Algorithm",
    "TifedAlgorithm",
    "default_model",
    "get_algorithm",
]

ALGORITHMS: tuple[str, ...] = (
    "sgd",
    "lsgd",
    "lsgd-q8",
    "tifed",
    "tifed-single",
    *META_ALGORITHMS,
)


@dataclass(frozen=True)
class _MLPAlgorithm(Algorithm):
    """An algorithm on an :class:`~eddl.learn.model.MLPSpec` model, aggregated by FedAvg.

    ``model`` holds the spec's keys (checked strictly: an unknown key is an error) plus the
    ``extra_model_keys`` of the subclass.
    """

    extra_model_keys: ClassVar[tuple[str, ...]] = ()

    @functools.cached_property
    def spec(self) -> mlp.MLPSpec:
        known = set(self.extra_model_keys)
        return mlp.MLPSpec.from_dict({k: v for k, v in self.model.items() if k not in known})

    def _check_spec(self) -> None:
        try:
            self.spec  # noqa: B018 - builds (and so validates) the model now, not at first use
        except ValueError as exc:
            raise AlgorithmError(f"{self.name}: {exc}", key="model") from exc

    @property
    def num_layers(self) -> int:
        return self.spec.num_layers

    @property
    def sizes(self) -> tuple[int, ...]:
        return self.spec.sizes

    @property
    def sync_rule_name(self) -> str:
        return "fedavg"


@dataclass(frozen=True)
class FloatAlgorithm(_MLPAlgorithm):
    """``sgd`` and ``lsgd`` on a float32 MLP."""

    def __post_init__(self) -> None:
        _check_keys(self.hyper, ("lr", "batch_size"), self.name)
        _hyper_number(self.hyper, "lr", 0.01, MAX_LR)
        _hyper_int(self.hyper, "batch_size", 1, 1, MAX_BATCH_SIZE)
        self._check_spec()

    @property
    def batch_rows(self) -> int:
        return 1 if self.name == "lsgd" else int(self.hyper.get("batch_size", 1))

    def init_params(self, seed: int) -> Params:
        return mlp.init_params(self.spec, seed)

    def make_trainer(self, layer: int | None = None, seed: int = 0) -> Trainer:
        from eddl.learn.lsgd import LSGDTrainer
        from eddl.learn.sgd import SGDTrainer

        if layer is not None:
            raise AlgorithmError(f"{self.name} trains the whole network; layer must be None")
        lr = float(self.hyper.get("lr", 0.01))
        if self.name == "lsgd":
            return LSGDTrainer(self.spec, lr)
        return SGDTrainer(self.spec, lr, int(self.hyper.get("batch_size", 1)))

    def prepare_inputs(self, x_u8: np.ndarray) -> np.ndarray:
        return _check_pixels(x_u8).astype(np.float32) / np.float32(255.0)

    def evaluate(self, params: Params, x_u8: np.ndarray, y: np.ndarray) -> float:
        return mlp.accuracy(self.spec, params, self.prepare_inputs(x_u8), y)


@dataclass(frozen=True)
class TifedAlgorithm(Algorithm):
    """``tifed`` (full network) and ``tifed-single`` (one layer per client)."""

    def __post_init__(self) -> None:
        _check_keys(self.hyper, ("lr_inv", "batch_size", "feedback_seed"), self.name)
        unknown = sorted(set(self.model) - {"sizes"})
        if unknown:
            raise AlgorithmError(
                f"{self.name}: unknown model key(s) {unknown}; TIFeD takes sizes", key="model"
            )
        try:  # the hyper-parameters alone first (on the default sizes), to name the culprit
            tifed.TifedConfig(
                **{
                    k: self.hyper[k]
                    for k in ("lr_inv", "batch_size", "feedback_seed")
                    if k in self.hyper
                }
            )
        except (TypeError, ValueError) as exc:
            raise AlgorithmError(f"{self.name}: {exc}", key="hyper") from exc
        try:
            self.config  # noqa: B018 - validates now
        except (KeyError, TypeError, ValueError) as exc:
            raise AlgorithmError(f"{self.name}: {exc}", key="model.sizes") from exc

    @property
    def config(self) -> tifed.TifedConfig:
        return tifed.TifedConfig(
            sizes=tuple(int(s) for s in self.model["sizes"]),
            lr_inv=int(self.hyper.get("lr_inv", 2048)),
            batch_size=int(self.hyper.get("batch_size", 25)),
            feedback_seed=int(self.hyper.get("feedback_seed", 0)),
        )

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    @property
    def sizes(self) -> tuple[int, ...]:
        return self.config.sizes

    @property
    def batch_rows(self) -> int:
        return self.config.batch_size

    @property
    def sync_rule_name(self) -> str:
        return "intmean"

    @property
    def single_layer(self) -> bool:
        return self.name == "tifed-single"

    def init_params(self, seed: int) -> Params:
        return tifed.init_params(self.config)

    def make_trainer(self, layer: int | None = None, seed: int = 0) -> Trainer:
        if self.single_layer and layer is None:
            raise AlgorithmError("tifed-single needs the layer this client trains")
        if not self.single_layer and layer is not None:
            raise AlgorithmError("tifed trains every layer; use tifed-single for one layer")
        return tifed.TifedTrainer(self.config, layer=layer)

    def prepare_inputs(self, x_u8: np.ndarray) -> np.ndarray:
        return _check_pixels(x_u8)

    def evaluate(self, params: Params, x_u8: np.ndarray, y: np.ndarray) -> float:
        return tifed.accuracy(params, _check_pixels(x_u8), y, self.config)


@dataclass(frozen=True)
class Q8Algorithm(_MLPAlgorithm):
    """``lsgd-q8``: L-SGD on int8 fixed-point weights, fine-tuning a trained float model.

    ``model`` is the float spec plus ``"format": {"weight_frac": [...], "bias_frac": [...]}``
    (see :mod:`eddl.learn.lsgd_q8`); build both the algorithm and the int8 model from a trained
    float model with :meth:`from_float`. ``hyper``: ``lr_shift`` (learning rate 2^-lr_shift).
    """

    extra_model_keys = ("format",)
    param_itemsize = 1

    def __post_init__(self) -> None:
        _check_keys(self.hyper, ("lr_shift",), self.name)
        self._check_spec()
        try:
            lsgd_q8.check_spec(self.spec)
            self.fmt  # noqa: B018 - validates now
        except (KeyError, TypeError, ValueError) as exc:
            raise AlgorithmError(f"{self.name}: {exc}", key="model") from exc

    @classmethod
    def from_float(
        cls, model: Mapping[str, Any], params: Params, hyper: Mapping[str, Any] | None = None
    ) -> tuple[Q8Algorithm, Params]:
        """Quantize a trained float model: the algorithm (with its format) and the int8 model."""
        spec = mlp.MLPSpec.from_dict({k: model[k] for k in ("sizes", "activations", "loss")})
        q8, fmt = lsgd_q8.quantize(spec, params)
        full = {
            **spec.to_dict(),
            "format": {"weight_frac": list(fmt.weight_frac), "bias_frac": list(fmt.bias_frac)},
        }
        return cls("lsgd-q8", full, dict(hyper or {})), q8

    @property
    def fmt(self) -> lsgd_q8.Q8Format:
        f = self.model["format"]
        return lsgd_q8.Q8Format(
            tuple(int(v) for v in f["weight_frac"]), tuple(int(v) for v in f["bias_frac"])
        )

    def init_params(self, seed: int) -> Params:
        raise AlgorithmError(
            "lsgd-q8 fine-tunes a trained model; quantize one with Q8Algorithm.from_float"
        )

    def make_trainer(self, layer: int | None = None, seed: int = 0) -> Trainer:
        return lsgd_q8.LSGDQ8Trainer(
            self.spec,
            self.fmt,
            lr_shift=int(self.hyper.get("lr_shift", 7)),
            seed=seed & 0xFFFFFFFF,
            layer=layer,
        )

    def prepare_inputs(self, x_u8: np.ndarray) -> np.ndarray:
        return _check_pixels(x_u8)

    def evaluate(self, params: Params, x_u8: np.ndarray, y: np.ndarray) -> float:
        return lsgd_q8.accuracy(self.spec, self.fmt, params, _check_pixels(x_u8), y)


@dataclass(frozen=True)
class MetaAlgorithm(_MLPAlgorithm):
    """``reptile`` and ``tinymetafed``: a float32 MLP meta-learned with an L-SGD inner loop.

    A worker's trainer is L-SGD with the inner learning rate; the rest of a round (local
    reconstruction, top-P selection, the outer update) is in :mod:`eddl.learn.tinymetafed`
    and :mod:`eddl.learn.reptile`, configured by :attr:`options`.
    """

    def __post_init__(self) -> None:
        self._check_spec()
        try:
            self.options  # noqa: B018 - validates now
        except MetaOptionsError as exc:
            raise AlgorithmError(str(exc).removeprefix(f"{exc.key}: "), key=exc.key) from exc

    @functools.cached_property
    def options(self) -> MetaOptions:
        return MetaOptions.from_hyper(self.name, self.hyper, self.spec.num_layers)

    @property
    def sync_rule_name(self) -> str:
        return "reptile"

    def init_params(self, seed: int) -> Params:
        return mlp.init_params(self.spec, seed)

    def make_trainer(self, layer: int | None = None, seed: int = 0) -> Trainer:
        from eddl.learn.lsgd import LSGDTrainer

        if layer is not None:
            raise AlgorithmError(f"{self.name} adapts the whole network; layer must be None")
        return LSGDTrainer(self.spec, self.options.lr)

    def prepare_inputs(self, x_u8: np.ndarray) -> np.ndarray:
        return _check_pixels(x_u8).astype(np.float32) / np.float32(255.0)

    def evaluate(self, params: Params, x_u8: np.ndarray, y: np.ndarray) -> float:
        return mlp.accuracy(self.spec, params, self.prepare_inputs(x_u8), y)


def default_model(name: str, num_features: int, num_classes: int = 10) -> dict[str, Any]:
    """The papers' topologies, with the input width of the dataset at hand.

    Float algorithms: L-SGD's ``in-40-32-10`` (tanh, tanh, sigmoid, BCE). TIFeD: ``in-200-10``
    for MNIST-sized inputs, ``in-64-10`` for small ones (digits).
    """
    if name in ("sgd", "lsgd", "lsgd-q8", *META_ALGORITHMS):
        return {
            "sizes": [num_features, 40, 32, num_classes],
            "activations": ["tanh", "tanh", "sigmoid"],
            "loss": "bce",
        }
    if name in ("tifed", "tifed-single"):
        hidden = 200 if num_features >= 256 else 64
        return {"sizes": [num_features, hidden, num_classes]}
    raise AlgorithmError(
        f"unknown algorithm {name!r}; known: {', '.join(ALGORITHMS)}", key="algorithm"
    )


def get_algorithm(
    name: str, model: Mapping[str, Any], hyper: Mapping[str, Any] | None = None
) -> Algorithm:
    """The :class:`Algorithm` called ``name`` for ``model`` and ``hyper``."""
    h = dict(hyper or {})
    if name in ("sgd", "lsgd"):
        return FloatAlgorithm(name, dict(model), h)
    if name in ("tifed", "tifed-single"):
        return TifedAlgorithm(name, dict(model), h)
    if name == "lsgd-q8":
        return Q8Algorithm(name, dict(model), h)
    if name in META_ALGORITHMS:
        return MetaAlgorithm(name, dict(model), h)
    raise AlgorithmError(
        f"unknown algorithm {name!r}; known: {', '.join(ALGORITHMS)}", key="algorithm"
    )
