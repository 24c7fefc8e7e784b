"""TIFeD integer DFA: pocket tanh, feedback matrices, known answers, modes, refused inputs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eddl.learn import tifed
from eddl.learn.fixedpoint import IntegerInputError
from eddl.learn.params import ParamsError, clone
from eddl.learn.trainer import Trainer, TrainerConfigError

KAT_DIR = Path(__file__).resolve().parent.parent / "data" / "kat"

# (v, y, gradInv) on both sides of every joint of the piecewise activation.
JOINT_TABLE = [
    (10_000, 128, 128),
    (129, 128, 128),
    (128, 128, 128),
    (127, 119, 8),
    (76, 107, 8),
    (75, 106, 8),
    (74, 106, 2),
    (33, 65, 2),
    (32, 64, 2),
    (31, 62, 1),
    (0, 0, 1),
    (-1, -2, 1),
    (-30, -60, 1),
    (-31, -62, 1),
    (-32, -64, 2),
    (-73, -105, 2),
    (-74, -106, 2),
    (-75, -107, 8),
    (-126, -120, 8),
    (-127, -120, 8),
    (-128, -127, 128),
    (-10_000, -127, 128),
]


def small_config(**kw: Any) -> tifed.TifedConfig:
    base: dict[str, Any] = {"sizes": (16, 8, 4), "lr_inv": 2048, "batch_size": 2}
    base.update(kw)
    return tifed.TifedConfig(**base)


def random_params(config: tifed.TifedConfig, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = tifed.init_params(config)
    for arr in params.values():
        arr[...] = rng.integers(-3000, 3000, size=arr.shape)
    return params


def batch(config: tifed.TifedConfig, n: int = 6, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, config.sizes[0])).astype(np.uint8)
    y = rng.integers(0, config.classes, size=n).astype(np.int64)
    return x, y


@pytest.mark.parametrize(("v", "y", "g"), JOINT_TABLE)
def test_pocket_tanh_joint_values(v: int, y: int, g: int) -> None:
    fan_in = 1
    out, grad = tifed.pocket_tanh(np.array([v * 256 * fan_in]), fan_in)
    assert (int(out[0]), int(grad[0])) == (y, g)


@pytest.mark.parametrize("fan_in", [1, 16, 200, 784])
@pytest.mark.parametrize(("v", "y", "g"), JOINT_TABLE[1:-1])
def test_pocket_tanh_scales_by_fan_in_with_floor(fan_in: int, v: int, y: int, g: int) -> None:
    div = 256 * fan_in
    z = np.array([v * div, v * div + div - 1, v * div - 1], dtype=np.int64)
    out, grad = tifed.pocket_tanh(z, fan_in)
    # v·div and v·div + div − 1 both floor to v; v·div − 1 floors to v − 1.
    assert out[0] == out[1] == y
    assert grad[0] == grad[1] == g
    below, _ = tifed.pocket_tanh(np.array([(v - 1) * div]), fan_in)
    assert out[2] == below[0]


def test_pocket_tanh_floors_negative_quotients() -> None:
    # Truncation toward zero would give v = 0 → y = 0; floor gives v = −1 → y = −2.
    out, grad = tifed.pocket_tanh(np.array([-1, -255, -256, -257]), 1)
    assert out.tolist() == [-2, -2, -2, -4]
    assert grad.tolist() == [1, 1, 1, 1]


def test_pocket_tanh_range_and_monotone_over_all_v() -> None:
    v = np.arange(-300, 301)
    out, grad = tifed.pocket_tanh(v * 256, 1)
    assert out.min() == -127 and out.max() == 128
    assert np.all(np.diff(out) >= 0)
    assert set(grad.tolist()) == set(tifed.GRAD_INV)


def test_feedback_radius_of_paper_network() -> None:
    # isqrt(12·32767 // (10 + 200)) = isqrt(1872) = 43
    assert tifed.feedback_radius(10, 200) == 43
    assert tifed.feedback_radius(4, 8) == 181


def test_feedback_matrices_range_and_determinism() -> None:
    cfg = tifed.TifedConfig(sizes=(784, 200, 50, 10), feedback_seed=7)
    b1 = tifed.feedback_matrices(cfg)
    b2 = tifed.feedback_matrices(cfg)
    assert [b.shape for b in b1] == [(10, 200), (10, 50)]
    for b, b_again, h in zip(b1, b2, (200, 50), strict=True):
        r = tifed.feedback_radius(10, h)
        assert b.dtype == np.int32
        assert b.min() >= -r and b.max() < r
        np.testing.assert_array_equal(b, b_again)
    assert b1[0].min() == -43  # a 2,000-entry draw from 86 values reaches the lower end
    other = tifed.feedback_matrices(tifed.TifedConfig(sizes=cfg.sizes, feedback_seed=8))
    assert not np.array_equal(b1[0], other[0])
    # The documented recipe: one default_rng(seed), int64 draws in layer order.
    rng = np.random.default_rng(7)
    np.testing.assert_array_equal(b1[0], rng.integers(-43, 43, size=(10, 200), dtype=np.int64))


def test_init_params_are_int32_zeros() -> None:
    params = tifed.init_params(tifed.TifedConfig())
    assert list(params) == ["W0", "b0", "W1", "b1"]
    assert params["W0"].shape == (784, 200) and params["b1"].shape == (10,)
    assert all(a.dtype == np.int32 and not a.any() for a in params.values())


def test_trainer_implements_interface_and_counts() -> None:
    cfg = small_config()
    trainer = tifed.TifedTrainer(cfg)
    assert isinstance(trainer, Trainer) and trainer.name == "tifed"
    x, y = batch(cfg, n=5)
    stats = trainer.train(tifed.init_params(cfg), x, y, epochs=2)
    # 5 samples in mini-batches of 2: 3 steps per epoch, the last one short.
    assert (stats.samples, stats.steps) == (10, 6)
    assert stats.state_bytes == trainer.state_bytes == tifed.mcu_state_bytes(cfg) > 0


def test_paper_state_bytes() -> None:
    # B 10×200 int16, acts 25×210 int16, gradInv 25×210 uint8, e 25×10 int16, δ 25×200 int32
    expected = 2 * 2000 + 2 * 25 * 210 + 25 * 210 + 2 * 250 + 4 * 25 * 200
    assert tifed.mcu_state_bytes(tifed.TifedConfig()) == expected


def load_kat() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((KAT_DIR / "tifed.json").read_text())
    return data


def test_kat_file_reproduced_exactly() -> None:
    kat = load_kat()
    c = kat["config"]
    cfg = tifed.TifedConfig(
        sizes=tuple(c["sizes"]),
        lr_inv=c["lr_inv"],
        batch_size=c["batch_size"],
        feedback_seed=c["feedback_seed"],
        target=c["target"],
        act_shift=c["act_shift"],
    )
    feedback = [np.array(b, dtype=np.int32) for b in kat["feedback"]]
    for b, drawn in zip(feedback, tifed.feedback_matrices(cfg), strict=True):
        np.testing.assert_array_equal(b, drawn)
    x = np.array(kat["x"], dtype=np.uint8)
    y = np.array(kat["y"], dtype=np.int64)
    assert len(kat["cases"]) >= 4
    for case in kat["cases"]:
        trainer = tifed.TifedTrainer(cfg, layer=case["layer"], feedback=feedback)
        for steps_key, expected in case["after_steps"].items():
            params = {k: np.array(v, dtype=np.int32) for k, v in case["init"].items()}
            n = int(steps_key) * cfg.batch_size
            trainer.train(params, x[:n], y[:n], epochs=1)
            for name, want in expected.items():
                np.testing.assert_array_equal(
                    params[name], np.array(want, dtype=np.int32), err_msg=f"{case['name']} {name}"
                )


def _make_kat_module() -> Any:
    spec = importlib.util.spec_from_file_location("make_kat", KAT_DIR / "make_kat.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kat_file_equals_a_fresh_regeneration() -> None:
    assert _make_kat_module().tifed_kat() == load_kat()


def test_kat_weights_actually_change_in_every_case() -> None:
    for case in load_kat()["cases"]:
        for expected in case["after_steps"].values():
            changed = [k for k in expected if expected[k] != case["init"][k]]
            trained = (
                ["W0", "b0", "W1", "b1"]
                if case["layer"] is None
                else [
                    f"W{case['layer']}",
                    f"b{case['layer']}",
                ]
            )
            assert set(changed) <= set(trained)
            assert any(k.startswith("W") for k in changed), case["name"]


@pytest.mark.parametrize("layer", [0, 1])
def test_single_layer_changes_only_its_layer(layer: int) -> None:
    cfg = small_config()
    params = random_params(cfg)
    before = clone(params)
    x, y = batch(cfg)
    tifed.TifedTrainer(cfg, layer=layer).train(params, x, y, epochs=2)
    for name in params:
        same = np.array_equal(params[name], before[name])
        assert same == (not name.endswith(str(layer))), name
    assert tifed.TifedTrainer(cfg, layer=layer).updated_names() == [f"W{layer}", f"b{layer}"]


def test_full_network_matches_single_layers_combined_for_one_step() -> None:
    # DFA deltas depend only on the output error, so one full step equals each layer's
    # single-layer step applied to the same starting weights.
    cfg = small_config()
    x, y = batch(cfg, n=2)
    full = random_params(cfg)
    tifed.TifedTrainer(cfg).train(full, x, y)
    for layer in (0, 1):
        single = random_params(cfg)
        tifed.TifedTrainer(cfg, layer=layer).train(single, x, y)
        for name in (f"W{layer}", f"b{layer}"):
            np.testing.assert_array_equal(single[name], full[name])


def test_rng_shuffles_deterministically() -> None:
    cfg = small_config()
    x, y = batch(cfg, n=8)
    runs = []
    for rng in (None, np.random.default_rng(1), np.random.default_rng(1)):
        params = random_params(cfg)
        tifed.TifedTrainer(cfg).train(params, x, y, epochs=2, rng=rng)
        runs.append(params)
    for name in runs[0]:
        np.testing.assert_array_equal(runs[1][name], runs[2][name])
    assert any(not np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_learns_digits_in_one_epoch() -> None:
    from eddl.data import load_dataset

    ds = load_dataset("digits")
    cfg = tifed.TifedConfig(sizes=(64, 32, 10), lr_inv=2048, batch_size=25)
    params = tifed.init_params(cfg)
    assert tifed.accuracy(params, ds.x_test, ds.y_test, cfg) < 0.2
    tifed.TifedTrainer(cfg).train(params, ds.x_train, ds.y_train, epochs=1)
    assert tifed.accuracy(params, ds.x_test, ds.y_test, cfg) >= 0.85


def test_weights_saturate_at_int32_instead_of_wrapping() -> None:
    cfg = small_config()
    top = np.iinfo(np.int32).max
    params = tifed.init_params(cfg)
    params["W0"][...] = top - 1
    x, y = batch(cfg, n=2)
    tifed.TifedTrainer(cfg, layer=0).train(params, x, y)
    assert params["W0"].dtype == np.int32
    assert (params["W0"] == top).any()  # pushed up by more than 1, clamped
    assert params["W0"].min() > 0  # nothing wrapped round to negative


BAD_INPUTS = [
    ("float pixels", lambda x, y: (x.astype(np.float32), y), IntegerInputError),
    ("1-d pixels", lambda x, y: (x[0], y), IntegerInputError),
    ("wrong width", lambda x, y: (x[:, :-1], y), IntegerInputError),
    ("no samples", lambda x, y: (x[:0], y[:0]), IntegerInputError),
    ("pixel 256", lambda x, y: (x.astype(np.int16) + 255, y), IntegerInputError),
    ("pixel -1", lambda x, y: (x.astype(np.int16) - 256, y), IntegerInputError),
    ("label too big", lambda x, y: (x, y + 4), IntegerInputError),
    ("negative label", lambda x, y: (x, y - 4), IntegerInputError),
    ("float labels", lambda x, y: (x, y.astype(np.float64)), IntegerInputError),
    ("label count", lambda x, y: (x, y[:-1]), IntegerInputError),
    ("list pixels", lambda x, y: (x.tolist(), y), IntegerInputError),
]


@pytest.mark.parametrize(("what", "mangle", "err"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_inputs_refused_and_params_untouched(what: str, mangle: Any, err: type) -> None:
    cfg = small_config()
    params = random_params(cfg)
    before = clone(params)
    x, y = batch(cfg)
    bad_x, bad_y = mangle(x, y)
    with pytest.raises(err):
        tifed.TifedTrainer(cfg).train(params, bad_x, bad_y)
    for name in params:
        np.testing.assert_array_equal(params[name], before[name])


def test_bad_params_and_options_refused() -> None:
    cfg = small_config()
    x, y = batch(cfg)
    trainer = tifed.TifedTrainer(cfg)
    floats = {k: v.astype(np.float32) for k, v in tifed.init_params(cfg).items()}
    with pytest.raises(ParamsError):
        trainer.train(floats, x, y)
    missing = tifed.init_params(cfg)
    del missing["b1"]
    with pytest.raises(ParamsError):
        trainer.train(missing, x, y)
    params = random_params(cfg)
    before = clone(params)
    with pytest.raises(ValueError, match="epochs"):
        trainer.train(params, x, y, epochs=0)
    for name in params:
        np.testing.assert_array_equal(params[name], before[name])
    with pytest.raises(ValueError, match="layer"):
        tifed.TifedTrainer(cfg, layer=2)
    with pytest.raises(ValueError, match="layer"):
        tifed.TifedTrainer(cfg, layer=True)
    with pytest.raises(ValueError, match="feedback"):
        tifed.TifedTrainer(cfg, feedback=[np.zeros((4, 7), dtype=np.int32)])
    with pytest.raises(ValueError, match="feedback"):
        tifed.TifedTrainer(cfg, feedback=[np.full((4, 8), 181, dtype=np.int32)])


@pytest.mark.parametrize(
    "kw",
    [
        {"sizes": (784,)},
        {"sizes": (784, 0, 10)},
        {"sizes": (784, 200, 1)},
        {"lr_inv": 0},
        {"batch_size": 0},
        {"target": 0},
        {"target": 128},
        {"act_shift": -1},
        {"lr_inv": 2048.0},
        {"batch_size": True},
        {"sizes": "784,10"},
    ],
)
def test_bad_config_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(TrainerConfigError):
        tifed.TifedConfig(**kw)


def test_config_from_lists_equals_config_from_tuples() -> None:
    assert tifed.TifedConfig(sizes=[784, 200, 10]) == tifed.TifedConfig()  # type: ignore[arg-type]


def test_predict_and_accuracy_validate() -> None:
    cfg = small_config()
    params = random_params(cfg)
    x, y = batch(cfg)
    pred = tifed.predict(params, x, cfg)
    assert pred.shape == (6,) and pred.min() >= 0 and pred.max() < 4
    assert tifed.accuracy(params, x, pred, cfg) == 1.0
    with pytest.raises(IntegerInputError):
        tifed.accuracy(params, x, y[:3], cfg)
    with pytest.raises(ParamsError):
        tifed.predict({"W0": params["W0"]}, x, cfg)
