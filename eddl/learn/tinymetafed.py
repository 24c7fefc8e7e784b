"""One device's part of a TinyMetaFed (or Reptile) round, and few-shot fine-tuning.

:func:`device_round` is what a sampled device does with the meta-model's shared layers ``θ``:

1. rebuild its local layers from its samples (:func:`~eddl.learn.reconstruction.reconstruct`;
   nothing to do when no layer is local),
2. adapt the whole model in the online inner loop: ``inner_epochs`` passes of batch size 1 in
   arrival order (:meth:`~eddl.learn.metamodel.MetaModel.train_pass`, L-SGD for classifiers),
3. take ``δ = φ − θ`` on the *shared* layers only and keep its top-P% entries; with
   ``error_feedback`` the top-P of ``δ + r`` (``r``: what the device did not send in its
   previous round), and the entries not sent become its new ``r``
   (:func:`~eddl.learn.topp.top_p_feedback`).

With ``kernel = "lsgd-q8"`` steps 2 and 3 run on int8 weights
(:class:`~eddl.learn.metaq8.Q8Round`), as a microcontroller with that kernel does.

:func:`fine_tune` is the same adaptation for a new device at evaluation time: reconstruct the
local layers, then ``eval_epochs`` passes over its k shots.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from eddl.learn.metamodel import MetaModel
from eddl.learn.metaoptions import MetaOptions
from eddl.learn.metaq8 import Q8Round
from eddl.learn.params import Params
from eddl.learn.reconstruction import LayerSplit, reconstruct
from eddl.learn.topp import SparseDelta, top_p, top_p_feedback

__all__ = ["DeviceUpdate", "device_round", "fine_tune"]


@dataclass(frozen=True)
class DeviceUpdate:
    """What a device sends: its shared-layer delta, dense and (TinyMetaFed) its top-P part."""

    delta: Params
    selected: dict[str, SparseDelta] | None
    samples: int
    steps: int
    residual: Params | None = None
    """With error feedback: the entries not sent, for the device's next round."""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.selected if self.selected is not None else self.delta)


def _adapt(
    model: MetaModel,
    split: LayerSplit,
    shared: Mapping[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    opts: MetaOptions,
    epochs: int,
    seed: int,
) -> tuple[Params, int]:
    full = reconstruct(model, split, shared, x, y, lr=opts.lr, epochs=opts.recon_epochs, seed=seed)
    rng = np.random.default_rng(seed) if epochs > 1 else None
    steps = model.train_pass(full, x, y, opts.lr, epochs=epochs, rng=rng)
    return full, steps


def device_round(
    model: MetaModel,
    split: LayerSplit,
    theta: Mapping[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    opts: MetaOptions,
    *,
    seed: int,
    residual: Mapping[str, np.ndarray] | None = None,
) -> DeviceUpdate:
    """Adapt ``θ`` (the shared layers) to ``(x, y)`` and return the upload.

    ``residual`` is the device's memory from its last round (error feedback only; None the
    first time).
    """
    if residual is not None and not opts.error_feedback:
        raise ValueError("a residual is only kept with error_feedback")
    if opts.kernel == "lsgd-q8":
        q8 = Q8Round(model, split, theta, x, y, opts, seed=seed)
        delta = q8.delta(q8.train())
        steps = len(x) * opts.inner_epochs
    else:
        phi, steps = _adapt(model, split, theta, x, y, opts, opts.inner_epochs, seed)
        delta = {n: phi[n] - theta[n] for n in split.shared_names}
    if opts.sparse and opts.error_feedback:
        sent, kept = top_p_feedback(delta, residual, opts.top_p)
        return DeviceUpdate(delta, sent, samples=len(x), steps=steps, residual=kept)
    selected = top_p(delta, opts.top_p) if opts.sparse else None
    return DeviceUpdate(delta, selected, samples=len(x), steps=steps)


def fine_tune(
    model: MetaModel,
    split: LayerSplit,
    theta: Mapping[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    opts: MetaOptions,
    *,
    seed: int,
) -> Params:
    """A new device's model after fine-tuning ``θ`` on its shots ``(x, y)``."""
    full, _ = _adapt(model, split, theta, x, y, opts, opts.eval_epochs, seed)
    return full
