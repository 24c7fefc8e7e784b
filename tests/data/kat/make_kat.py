"""Regenerate the known-answer vectors of the integer kernels (TIFeD, L-SGD-q8).

Run ``python tests/data/kat/make_kat.py`` from the repository root. It writes ``tifed.json`` and
``lsgd_q8.json`` next to itself. The numpy reference in ``eddl.learn`` produced every number in
them; ``tests/unit/test_tifed.py`` and ``tests/unit/test_lsgd_q8.py`` check that the reference
still reproduces them exactly, and the firmware tests feed the same inputs to the C kernels.

File layout (JSON, integers only, arrays as nested lists in row-major order):

* ``config``: the trainer's configuration fields;
* ``x`` (uint8 pixels, one row per sample), ``y`` (labels);
* TIFeD: ``feedback`` (one int32 matrix per hidden layer); L-SGD-q8: ``format`` and tables;
* ``cases``: each with ``name``, ``layer`` (null = all layers), ``init`` (the starting
  parameters) and ``after_steps``: ``{"1": params, "3": params}`` — the parameters after
  training from ``init`` on the first ``steps × batch`` samples for one epoch, in order.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from eddl.learn import lsgd_q8, tifed
from eddl.learn.model import MLPSpec, init_params

HERE = Path(__file__).resolve().parent


def _lists(params: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: v.tolist() for k, v in params.items()}


def tifed_kat() -> dict[str, Any]:
    cfg = tifed.TifedConfig(sizes=(16, 8, 4), lr_inv=2048, batch_size=2, feedback_seed=11)
    rng = np.random.default_rng(2024)
    x = rng.integers(0, 256, size=(6, 16)).astype(np.uint8)
    y = np.array([0, 1, 2, 3, 1, 0], dtype=np.int64)
    feedback = tifed.feedback_matrices(cfg)
    zero = tifed.init_params(cfg)
    rand = tifed.init_params(cfg)
    # Random starting weights make every pocket-tanh piece and negative floor divisions occur.
    rand["W0"][...] = rng.integers(-3000, 3000, size=rand["W0"].shape)
    rand["b0"][...] = rng.integers(-30000, 30000, size=rand["b0"].shape)
    rand["W1"][...] = rng.integers(-1500, 1500, size=rand["W1"].shape)
    rand["b1"][...] = rng.integers(-3000, 3000, size=rand["b1"].shape)
    cases = []
    for name, layer, init in [
        ("full-zero-init", None, zero),
        ("full-random-init", None, rand),
        ("layer0-random-init", 0, rand),
        ("layer1-random-init", 1, rand),
    ]:
        trainer = tifed.TifedTrainer(cfg, layer=layer, feedback=feedback)
        after = {}
        for steps in (1, 3):
            params = {k: v.copy() for k, v in init.items()}
            n = steps * cfg.batch_size
            trainer.train(params, x[:n], y[:n], epochs=1)
            after[str(steps)] = _lists(params)
        cases.append({"name": name, "layer": layer, "init": _lists(init), "after_steps": after})
    fwd = tifed.forward(rand, x, cfg)
    pieces = set(fwd.grad_inv[0].ravel().tolist()) | set(fwd.grad_inv[1].ravel().tolist())
    if pieces != set(tifed.GRAD_INV):
        raise RuntimeError(f"the random-init case misses pocket-tanh pieces: {sorted(pieces)}")
    return {
        "algorithm": "tifed",
        "config": {
            "sizes": list(cfg.sizes),
            "lr_inv": cfg.lr_inv,
            "batch_size": cfg.batch_size,
            "feedback_seed": cfg.feedback_seed,
            "target": cfg.target,
            "act_shift": cfg.act_shift,
        },
        "x": x.tolist(),
        "y": y.tolist(),
        "feedback": [b.tolist() for b in feedback],
        # Forward pass of the random-init model on x: outputs and gradInv of every layer.
        "forward_random_init": {
            "acts": [a.tolist() for a in fwd.acts[1:]],
            "grad_inv": [g.tolist() for g in fwd.grad_inv],
        },
        "cases": cases,
    }


def lsgd_q8_kat() -> dict[str, Any]:
    spec = MLPSpec((16, 8, 4), ("tanh", "sigmoid"), "bce")
    rng = np.random.default_rng(77)
    floats = init_params(spec, seed=5)
    for i in range(spec.num_layers):
        floats[f"b{i}"][...] = rng.uniform(-0.3, 0.3, size=floats[f"b{i}"].shape)
    init, fmt = lsgd_q8.quantize(spec, floats)
    x = rng.integers(0, 256, size=(6, 16)).astype(np.uint8)
    y = np.array([3, 0, 1, 2, 3, 1], dtype=np.int64)
    lr_shift, seed = 2, 7
    cases = []
    for name, layer in [("full", None), ("layer0", 0), ("layer1", 1)]:
        after = {}
        counters = {}
        for steps in (1, 3):
            params = {k: v.copy() for k, v in init.items()}
            trainer = lsgd_q8.LSGDQ8Trainer(spec, fmt, lr_shift=lr_shift, seed=seed, layer=layer)
            trainer.train(params, x[:steps], y[:steps], epochs=1)
            after[str(steps)] = _lists(params)
            counters[str(steps)] = trainer.counter
        cases.append(
            {
                "name": name,
                "layer": layer,
                "init": _lists(init),
                "after_steps": after,
                "counter_after_steps": counters,
            }
        )
    outs = lsgd_q8.forward(spec, fmt, init, x)
    return {
        "algorithm": "lsgd-q8",
        "config": {
            "sizes": list(spec.sizes),
            "activations": list(spec.activations),
            "loss": spec.loss,
            "lr_shift": lr_shift,
            "seed": seed,
            "counter": 0,
            "batch_size": 1,
        },
        "format": {"weight_frac": list(fmt.weight_frac), "bias_frac": list(fmt.bias_frac)},
        "tables": {
            "tanh": lsgd_q8.TANH_TABLE.tolist(),
            "sigmoid": lsgd_q8.SIGMOID_TABLE.tolist(),
        },
        "x": x.tolist(),
        "y": y.tolist(),
        "forward_init": [o.tolist() for o in outs],
        "cases": cases,
    }


def write(name: str, data: dict[str, Any]) -> Path:
    path = HERE / name
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    return path


def main() -> int:
    print(write("tifed.json", tifed_kat()))
    print(write("lsgd_q8.json", lsgd_q8_kat()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
