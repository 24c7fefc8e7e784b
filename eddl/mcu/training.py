"""Train a dataset on one device: the loop behind ``eddl mcu train`` and the benchmarks.

The host streams the training set through the device's sample buffer (``buffer`` samples at a
time), runs TRAIN on each buffer, then measures accuracy with PREDICT on the test set. TIFeD
starts from zero weights and ships its feedback matrices; the float algorithms start from
:func:`eddl.learn.model.init_params`. ``lsgd-q8`` fine-tunes: the host trains a float model
with L-SGD on the first ``pretrain`` samples, quantizes it, and the device fine-tunes the int8
model on the rest (the report gives the accuracy before and after).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from .driver import Device
from .protocol import Act, Algo, Loss, SetupSpec
from .session import DeviceModel

__all__ = ["ALGORITHMS", "TrainOptions", "TrainReport", "train_on_device"]

ALGORITHMS = ("tifed", "tifed-single", "lsgd", "sgd", "lsgd-q8")


@dataclass(frozen=True)
class TrainOptions:
    algo: str
    hidden: tuple[int, ...] = (32,)
    buffer: int = 50
    batch: int = 25
    local_epochs: int = 1
    passes: int = 1
    lr: float = 0.01
    lr_inv: int = 2048
    seed: int = 0
    layer: int | None = None
    lr_shift: int = 6
    pretrain: int = 300
    train_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.algo not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algo!r}; choose from {ALGORITHMS}")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden widths must be positive: {self.hidden}")
        if self.buffer < 1 or self.batch < 1 or self.local_epochs < 1 or self.passes < 1:
            raise ValueError("buffer, batch, local_epochs and passes must be >= 1")
        if not (self.lr > 0 and np.isfinite(self.lr)) or self.lr_inv < 1:
            raise ValueError("lr must be positive and finite, lr_inv >= 1")


@dataclass
class TrainReport:
    algo: str
    sizes: tuple[int, ...]
    samples: int
    kernel_ticks: int
    tick_hz: int
    accuracy: float
    arena_used: int
    arena_bytes: int
    seconds: float
    link: dict[str, int] = field(default_factory=dict)
    accuracy_before: float | None = None

    @property
    def ticks_per_sample(self) -> float:
        return self.kernel_ticks / self.samples if self.samples else 0.0

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["ticks_per_sample"] = self.ticks_per_sample
        return d


def _spec(opts: TrainOptions, width: int, classes: int) -> SetupSpec:
    sizes = (width, *opts.hidden, classes)
    if opts.algo.startswith("tifed"):
        batch = min(opts.batch, opts.buffer)
        return SetupSpec(Algo.TIFED, sizes, capacity=opts.buffer, max_batch=batch)
    acts = tuple([Act.TANH] * len(opts.hidden) + [Act.SIGMOID])
    if opts.algo == "sgd":
        return SetupSpec(
            Algo.SGD,
            sizes,
            capacity=opts.buffer,
            max_batch=min(opts.batch, opts.buffer),
            activations=acts,
            loss=Loss.BCE,
        )
    if opts.algo == "lsgd":
        return SetupSpec(Algo.LSGD, sizes, capacity=opts.buffer, activations=acts, loss=Loss.BCE)
    return SetupSpec(Algo.LSGD_Q8, sizes, capacity=opts.buffer, activations=acts, loss=Loss.BCE)


def _initial(model: DeviceModel, opts: TrainOptions, x_pre: np.ndarray, y_pre: np.ndarray) -> None:
    spec = model.spec
    if spec.algo == Algo.TIFED:
        from eddl.learn import tifed

        cfg = tifed.TifedConfig(
            sizes=spec.sizes, lr_inv=opts.lr_inv, batch_size=spec.max_batch, feedback_seed=opts.seed
        )
        model.load_feedback(tifed.feedback_matrices(cfg))
        return
    from eddl.learn.model import MLPSpec, init_params

    acts = tuple(a.name.lower() for a in spec.activations)
    mlp = MLPSpec(sizes=spec.sizes, activations=acts, loss=spec.loss.name.lower())
    params = init_params(mlp, opts.seed)
    if spec.algo != Algo.LSGD_Q8:
        model.load_params(params)
        return
    from eddl.learn import lsgd_q8
    from eddl.learn.lsgd import LSGDTrainer

    LSGDTrainer(mlp, opts.lr).train(params, x_pre.astype(np.float32) / 255, y_pre)
    q8_params, fmt = lsgd_q8.quantize(mlp, params)
    model.load_params(q8_params)
    model.load_q8_format(fmt.weight_frac, fmt.bias_frac, seed=opts.seed)


def train_on_device(
    dev: Device,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    opts: TrainOptions,
    progress: Callable[[int, int], None] | None = None,
) -> TrainReport:
    """Train ``opts.algo`` on the device and return accuracy, ticks and link figures."""
    start = time.perf_counter()
    classes = int(max(y_train.max(), y_test.max())) + 1
    model = DeviceModel(dev, _spec(opts, x_train.shape[1], classes))
    before = None
    if opts.algo == "lsgd-q8":
        if not 0 < opts.pretrain < x_train.shape[0]:
            raise ValueError(f"pretrain must be in 1..{x_train.shape[0] - 1}")
        _initial(model, opts, x_train[: opts.pretrain], y_train[: opts.pretrain])
        before = model.accuracy(x_test, y_test, timeout=opts.train_timeout)
        x_train, y_train = x_train[opts.pretrain :], y_train[opts.pretrain :]
    else:
        _initial(model, opts, x_train[:0], y_train[:0])
    spec = model.spec
    lr_inv = opts.lr_shift if opts.algo == "lsgd-q8" else opts.lr_inv
    total = x_train.shape[0] * opts.passes
    samples = ticks = seen = 0
    chunk = 0
    for _ in range(opts.passes):
        for first in range(0, x_train.shape[0], opts.buffer):
            n = model.load_samples(
                x_train[first : first + opts.buffer], y_train[first : first + opts.buffer]
            )
            layer = opts.layer
            if opts.algo == "tifed-single" and layer is None:
                layer = chunk % model.num_layers  # one layer per buffer, in turn
            done, t = dev.train(
                n,
                batch=min(spec.max_batch, n),
                epochs=opts.local_epochs,
                layer=layer,
                lr_inv=lr_inv,
                lr=opts.lr,
                timeout=opts.train_timeout,
            )
            samples += done
            ticks += t
            chunk += 1
            seen += n
            if progress is not None:
                progress(seen, total)
    acc = model.accuracy(x_test, y_test, timeout=opts.train_timeout)
    info = dev.info
    return TrainReport(
        algo=opts.algo,
        sizes=spec.sizes,
        samples=samples,
        kernel_ticks=ticks,
        tick_hz=info.tick_hz if info else 0,
        accuracy=acc,
        arena_used=model.arena_used,
        arena_bytes=model.arena_bytes,
        seconds=time.perf_counter() - start,
        link=dev.link.as_dict(),
        accuracy_before=before,
    )
