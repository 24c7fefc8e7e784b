"""A meta-learning device round on the integer inner loop (``kernel = "lsgd-q8"``).

What a microcontroller with the ``lsgd-q8`` kernel computes, in numpy, bit for bit:

1. the local layers are rebuilt in float (:func:`~eddl.learn.reconstruction.reconstruct`,
   on the gateway for an MCU), then the whole model is quantized
   (:func:`~eddl.learn.lsgd_q8.quantize`: per-layer power-of-two formats from its largest
   magnitudes) — ``θ_q``;
2. ``inner_epochs`` online passes of L-SGD-q8 over the device's pixels (``round(x · 255)``;
   the character tasks scale uint8 pixels by 1/255, so this is exact) with learning rate
   ``2^-lr_shift``, rounding seed 0 and counter 0 (a fresh trainer per round, as the
   firmware's), in arrival order for one pass, else ``default_rng(seed).permutation`` per
   pass — ``φ_q``;
3. ``δ = (φ_q − θ_q) · 2^-f`` per shared tensor (``f`` its fractional bits), then top-P
   (``Q8Round(...).delta(r.train())``, as :func:`~eddl.learn.tinymetafed.device_round` does).

``δ`` is measured against the quantized ``θ_q``; the server adds it to its float ``θ``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from eddl.learn import lsgd_q8
from eddl.learn.metamodel import Classifier, MetaModel
from eddl.learn.metaoptions import MetaOptions
from eddl.learn.params import Params
from eddl.learn.reconstruction import LayerSplit, reconstruct

__all__ = ["Q8Round", "Q8RoundError", "pixels_of"]


class Q8RoundError(ValueError):
    """The model or the samples are not what the integer inner loop runs on."""


def pixels_of(x: np.ndarray) -> np.ndarray:
    """``x`` (uint8 pixels scaled by 1/255) back as uint8 pixels; refuses anything else."""
    px = np.rint(np.asarray(x, dtype=np.float64) * 255.0)
    if (
        x.ndim != 2
        or not np.isfinite(px).all()
        or px.min(initial=0) < 0
        or px.max(initial=0) > 255
        or not np.allclose(px / 255.0, x, rtol=0.0, atol=1e-6)
    ):
        raise Q8RoundError("lsgd-q8 runs on uint8 pixels scaled by 1/255 (character tasks)")
    return px.astype(np.uint8)


class Q8Round:
    """The quantized model ``θ_q`` of one device round and its integer inner loop."""

    def __init__(
        self,
        model: MetaModel,
        split: LayerSplit,
        theta: Mapping[str, np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        opts: MetaOptions,
        *,
        seed: int,
    ) -> None:
        if not isinstance(model, Classifier):
            raise Q8RoundError("lsgd-q8 runs classifiers (sigmoid/BCE head), not regressors")
        self.spec = model.spec
        self.split = split
        self.pixels = pixels_of(x)
        full = reconstruct(
            model, split, theta, x, y, lr=opts.lr, epochs=opts.recon_epochs, seed=seed
        )
        self.theta_q, self.fmt = lsgd_q8.quantize(self.spec, full)
        self.y = y
        self.opts = opts
        self.seed = seed

    def train(self) -> Params:
        """``φ_q`` after the inner loop (``θ_q`` is left as it is)."""
        phi = {n: a.copy() for n, a in self.theta_q.items()}
        epochs = self.opts.inner_epochs
        rng = np.random.default_rng(self.seed) if epochs > 1 else None
        trainer = lsgd_q8.LSGDQ8Trainer(self.spec, self.fmt, lr_shift=self.opts.lr_shift)
        trainer.train(phi, self.pixels, self.y, epochs=epochs, rng=rng)
        return phi

    def delta(self, phi: Mapping[str, np.ndarray]) -> Params:
        """``(φ_q − θ_q) · 2^-f`` of the shared tensors, float32."""
        out: Params = {}
        for i in range(self.split.first_local):
            for kind, frac in (("W", self.fmt.weight_frac[i]), ("b", self.fmt.bias_frac[i])):
                name = f"{kind}{i}"
                d = phi[name].astype(np.int32) - self.theta_q[name].astype(np.int32)
                out[name] = d.astype(np.float32) * np.float32(2.0**-frac)
        return out
