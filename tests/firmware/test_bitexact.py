"""The C kernels against the numpy reference: TIFeD and L-SGD-q8 bit for bit (known-answer
vectors and seeded random runs, all layers and single-layer), float L-SGD and SGD to a relative
tolerance.

The same checks run on the host simulator and, marked ``qemu``, on the Cortex-M3 image under QEMU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eddl.learn import lsgd_q8, tifed
from eddl.learn.lsgd import LSGDTrainer
from eddl.learn.model import MLPSpec, init_params
from eddl.learn.sgd import SGDTrainer
from eddl.mcu.driver import Device
from eddl.mcu.launch import Launched
from eddl.mcu.protocol import Act, Algo, Loss, SetupSpec
from eddl.mcu.session import DeviceModel

KAT = Path(__file__).resolve().parents[1] / "data" / "kat" / "tifed.json"
# Float32 kernels: C sums in a different order than numpy's BLAS, and tanhf/expf differ from
# numpy's in the last ulp; after a few hundred updates weights agree to this relative tolerance.
FLOAT_RTOL = 1e-4
FLOAT_ATOL = 1e-5


def _kat() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(KAT.read_text())
    return data


def _tifed_on_device(
    dev: Device,
    cfg: tifed.TifedConfig,
    init: dict[str, np.ndarray],
    feedback: list[np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    layer: int | None,
    epochs: int = 1,
) -> dict[str, np.ndarray]:
    spec = SetupSpec(
        Algo.TIFED,
        cfg.sizes,
        capacity=len(x),
        max_batch=cfg.batch_size,
        target=cfg.target,
        act_shift=cfg.act_shift,
    )
    model = DeviceModel(dev, spec)
    model.load_params(init)
    model.load_feedback(feedback)
    model.load_samples(x, y)
    dev.train(
        len(x), batch=cfg.batch_size, epochs=epochs, layer=layer, lr_inv=cfg.lr_inv, timeout=60.0
    )
    return model.read_params()


def _check_kat(url: str) -> int:
    kat = _kat()
    c = kat["config"]
    cfg = tifed.TifedConfig(
        sizes=tuple(c["sizes"]),
        lr_inv=c["lr_inv"],
        batch_size=c["batch_size"],
        feedback_seed=c["feedback_seed"],
        target=c["target"],
        act_shift=c["act_shift"],
    )
    x = np.array(kat["x"], dtype=np.uint8)
    y = np.array(kat["y"], dtype=np.int64)
    feedback = [np.array(b, dtype=np.int32) for b in kat["feedback"]]
    checked = 0
    with Device.open(url, timeout=3.0) as dev:
        for case in kat["cases"]:
            init = {k: np.array(v, dtype=np.int32) for k, v in case["init"].items()}
            for steps, want in case["after_steps"].items():
                n = int(steps) * cfg.batch_size
                got = _tifed_on_device(dev, cfg, init, feedback, x[:n], y[:n], case["layer"])
                for name, value in want.items():
                    np.testing.assert_array_equal(got[name], np.array(value), err_msg=case["name"])
                checked += 1
    return checked


def _random_tifed(url: str, seeds: range, sizes: tuple[int, ...], n: int) -> None:
    with Device.open(url, timeout=3.0) as dev:
        for seed in seeds:
            rng = np.random.default_rng(seed)
            cfg = tifed.TifedConfig(
                sizes=sizes,
                lr_inv=int(rng.choice([2048, 4096, 8192])),
                batch_size=int(rng.integers(1, 6)),
                feedback_seed=seed,
            )
            feedback = tifed.feedback_matrices(cfg)
            init = tifed.init_params(cfg)
            if seed % 2:  # random starting weights reach every pocket-tanh piece
                for v in init.values():
                    v[...] = rng.integers(-4000, 4000, size=v.shape)
            x = rng.integers(0, 256, size=(n, sizes[0])).astype(np.uint8)
            y = rng.integers(0, sizes[-1], size=n)
            for layer in (None, *range(len(sizes) - 1)):
                ref = {k: v.copy() for k, v in init.items()}
                tifed.TifedTrainer(cfg, layer=layer, feedback=feedback).train(ref, x, y, epochs=2)
                got = _tifed_on_device(dev, cfg, init, feedback, x, y, layer, epochs=2)
                for name in ref:
                    np.testing.assert_array_equal(
                        got[name], ref[name], err_msg=f"seed {seed} layer {layer} {name}"
                    )
                assert any(not np.array_equal(ref[k], init[k]) for k in ref), "nothing trained"


def _float_case(url: str, algo: Algo, batch: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = (20, 12, 8, 4)
    mlp = MLPSpec(sizes=sizes, activations=("tanh", "tanh", "sigmoid"), loss="bce")
    params = init_params(mlp, seed)
    n = 60
    x = rng.integers(0, 256, size=(n, sizes[0])).astype(np.uint8)
    y = rng.integers(0, sizes[-1], size=n)
    ref = {k: v.copy() for k, v in params.items()}
    xf = x.astype(np.float32) / np.float32(255.0)
    trainer = LSGDTrainer(mlp, lr=0.05) if algo == Algo.LSGD else SGDTrainer(mlp, 0.05, batch)
    trainer.train(ref, xf, y, epochs=3)
    spec = SetupSpec(
        algo,
        sizes,
        capacity=n,
        max_batch=batch,
        loss=Loss.BCE,
        activations=(Act.TANH, Act.TANH, Act.SIGMOID),
    )
    with Device.open(url, timeout=3.0) as dev:
        model = DeviceModel(dev, spec)
        model.load_params(params)
        model.load_samples(x, y)
        dev.train(n, batch=batch, epochs=3, lr=0.05, timeout=60.0)
        got = model.read_params()
    for name in ref:
        assert not np.allclose(ref[name], params[name]), f"{name} did not train"
        np.testing.assert_allclose(
            got[name], ref[name], rtol=FLOAT_RTOL, atol=FLOAT_ATOL, err_msg=f"{algo.name} {name}"
        )


def test_tifed_known_answers_on_host(sim: Launched) -> None:
    assert _check_kat(sim.url) == 8


def test_tifed_random_runs_match_numpy_on_host(sim: Launched) -> None:
    _random_tifed(sim.url, range(6), (24, 12, 7, 5), n=23)


@pytest.mark.parametrize("algo,batch", [(Algo.LSGD, 1), (Algo.SGD, 1), (Algo.SGD, 7)])
def test_float_kernels_match_numpy_on_host(sim: Launched, algo: Algo, batch: int) -> None:
    _float_case(sim.url, algo, batch, seed=3)


@pytest.mark.qemu
def test_tifed_known_answers_on_qemu(qemu: Launched) -> None:
    assert _check_kat(qemu.url) == 8


@pytest.mark.qemu
@pytest.mark.slow
def test_tifed_random_runs_match_numpy_on_qemu(qemu: Launched) -> None:
    _random_tifed(qemu.url, range(2), (24, 12, 7, 5), n=17)


@pytest.mark.qemu
@pytest.mark.parametrize("algo,batch", [(Algo.LSGD, 1), (Algo.SGD, 5)])
def test_float_kernels_match_numpy_on_qemu(qemu: Launched, algo: Algo, batch: int) -> None:
    _float_case(qemu.url, algo, batch, seed=4)


KAT_Q8 = KAT.with_name("lsgd_q8.json")


def _q8_on_device(
    dev: Device,
    mlp: MLPSpec,
    fmt: lsgd_q8.Q8Format,
    init: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    lr_shift: int,
    seed: int,
    counter: int,
    layer: int | None,
    epochs: int = 1,
) -> tuple[dict[str, np.ndarray], int]:
    acts = tuple(Act[a.upper()] for a in mlp.activations)
    spec = SetupSpec(Algo.LSGD_Q8, mlp.sizes, capacity=len(x), activations=acts, loss=Loss.BCE)
    model = DeviceModel(dev, spec)
    model.load_params(init)
    model.load_q8_format(fmt.weight_frac, fmt.bias_frac, seed=seed, counter=counter)
    model.load_samples(x, y)
    dev.train(len(x), epochs=epochs, layer=layer, lr_inv=lr_shift, timeout=60.0)
    return model.read_params(), model.q8_counter()


def _check_q8_kat(url: str) -> int:
    kat = json.loads(KAT_Q8.read_text())
    c = kat["config"]
    mlp = MLPSpec(sizes=tuple(c["sizes"]), activations=tuple(c["activations"]), loss=c["loss"])
    fmt = lsgd_q8.Q8Format(tuple(kat["format"]["weight_frac"]), tuple(kat["format"]["bias_frac"]))
    x = np.array(kat["x"], dtype=np.uint8)
    y = np.array(kat["y"], dtype=np.int64)
    checked = 0
    with Device.open(url, timeout=3.0) as dev:
        for case in kat["cases"]:
            init = {k: np.array(v, dtype=np.int8) for k, v in case["init"].items()}
            for steps, want in case["after_steps"].items():
                n = int(steps)
                got, counter = _q8_on_device(
                    dev,
                    mlp,
                    fmt,
                    init,
                    x[:n],
                    y[:n],
                    lr_shift=c["lr_shift"],
                    seed=c["seed"],
                    counter=c["counter"],
                    layer=case["layer"],
                )
                for name, value in want.items():
                    np.testing.assert_array_equal(got[name], np.array(value), err_msg=case["name"])
                assert counter == case["counter_after_steps"][steps]
                checked += 1
    return checked


def _random_q8(url: str, seeds: range, n: int) -> None:
    mlp = MLPSpec(sizes=(20, 12, 8, 4), activations=("tanh", "sigmoid", "sigmoid"), loss="bce")
    with Device.open(url, timeout=3.0) as dev:
        for seed in seeds:
            rng = np.random.default_rng(seed)
            floats = init_params(mlp, seed)
            for v in floats.values():  # spread the magnitudes so formats differ per layer
                v *= np.float32(rng.uniform(0.5, 4.0))
            init, fmt = lsgd_q8.quantize(mlp, floats)
            x = rng.integers(0, 256, size=(n, 20)).astype(np.uint8)
            y = rng.integers(0, 4, size=n)
            lr_shift = int(rng.integers(0, 4))
            for layer in (None, 0, 2):
                ref = {k: v.copy() for k, v in init.items()}
                trainer = lsgd_q8.LSGDQ8Trainer(
                    mlp, fmt, lr_shift=lr_shift, seed=seed, counter=seed * 1000, layer=layer
                )
                trainer.train(ref, x, y, epochs=2)
                got, counter = _q8_on_device(
                    dev,
                    mlp,
                    fmt,
                    init,
                    x,
                    y,
                    lr_shift=lr_shift,
                    seed=seed,
                    counter=seed * 1000,
                    layer=layer,
                    epochs=2,
                )
                for name in ref:
                    np.testing.assert_array_equal(
                        got[name], ref[name], err_msg=f"seed {seed} layer {layer} {name}"
                    )
                assert counter == trainer.counter
                assert any(not np.array_equal(ref[k], init[k]) for k in ref), "nothing trained"


def test_lsgd_q8_known_answers_on_host(sim: Launched) -> None:
    assert _check_q8_kat(sim.url) == 6


def test_lsgd_q8_random_runs_match_numpy_on_host(sim: Launched) -> None:
    _random_q8(sim.url, range(5), n=15)


@pytest.mark.qemu
def test_lsgd_q8_known_answers_on_qemu(qemu: Launched) -> None:
    assert _check_q8_kat(qemu.url) == 6


@pytest.mark.qemu
def test_lsgd_q8_random_runs_match_numpy_on_qemu(qemu: Launched) -> None:
    _random_q8(qemu.url, range(2), n=9)
