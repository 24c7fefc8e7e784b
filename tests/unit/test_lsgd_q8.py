"""L-SGD-q8: formats, tables, rounding, known answers, fine-tuning, refused inputs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eddl.data import load_dataset
from eddl.learn import lsgd_q8 as q8
from eddl.learn.fixedpoint import IntegerInputError
from eddl.learn.lsgd import LSGDTrainer
from eddl.learn.model import MLPSpec, init_params
from eddl.learn.model import accuracy as float_accuracy
from eddl.learn.params import ParamsError, clone
from eddl.learn.trainer import Trainer, TrainerConfigError

KAT = Path(__file__).resolve().parent.parent / "data" / "kat" / "lsgd_q8.json"
SMALL = MLPSpec((16, 8, 4), ("tanh", "sigmoid"), "bce")
PAPER = MLPSpec((784, 40, 32, 10), ("tanh", "tanh", "sigmoid"), "bce")


def small_model(seed: int = 1) -> tuple[dict[str, np.ndarray], q8.Q8Format]:
    return q8.quantize(SMALL, init_params(SMALL, seed))


def small_batch(n: int = 6, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 16)).astype(np.uint8), rng.integers(0, 4, n).astype(np.int64)


def _half_away(v: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.sign(v) * np.floor(np.abs(v) + 0.5)
    return out


def test_tables_match_their_formula() -> None:
    i = np.arange(-128, 128)
    tanh = np.clip(_half_away(np.tanh(i / 32) * 128), -127, 127)
    sigmoid = np.clip(_half_away(128 / (1 + np.exp(-i / 16))), 0, 127)
    np.testing.assert_array_equal(q8.TANH_TABLE, tanh.astype(np.int8))
    np.testing.assert_array_equal(q8.SIGMOID_TABLE, sigmoid.astype(np.int8))
    assert q8.TANH_TABLE[128] == 0 and q8.SIGMOID_TABLE[128] == 64
    assert np.all(np.diff(q8.TANH_TABLE.astype(int)) >= 0)
    assert np.all(np.diff(q8.SIGMOID_TABLE.astype(int)) >= 0)


def _lowbias32_reference(v: int) -> int:
    m = 0xFFFFFFFF
    v ^= v >> 16
    v = (v * 0x7FEB352D) & m
    v ^= v >> 15
    v = (v * 0x846CA68B) & m
    return v ^ (v >> 16)


def test_lowbias32_matches_python_integers() -> None:
    vals = [0, 1, 2, 12345, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]
    got = q8.lowbias32(np.array(vals, dtype=np.uint32))
    assert got.tolist() == [_lowbias32_reference(v) for v in vals]
    assert _lowbias32_reference(1) != 1


def test_stochastic_shift_bounds_exactness_and_counter() -> None:
    u = np.array([-7, -1, 0, 1, 5, 8, -8, 1023], dtype=np.int64)
    out, nxt = q8.stochastic_shift(u, 3, key=99, counter=10)
    floor = u >> 3
    assert nxt == 18
    assert np.all((out == floor) | (out == floor + 1))
    exact = u % 8 == 0
    np.testing.assert_array_equal(out[exact], u[exact] // 8)
    again, _ = q8.stochastic_shift(u, 3, key=99, counter=10)
    np.testing.assert_array_equal(out, again)
    # The counter wraps modulo 2^32.
    _, wrapped = q8.stochastic_shift(u, 3, key=99, counter=2**32 - 3)
    assert wrapped == 5
    with pytest.raises(q8.Q8Error):
        q8.stochastic_shift(u, 0, key=1, counter=0)


def test_stochastic_shift_is_unbiased() -> None:
    u = np.full(20_000, 3, dtype=np.int64)  # 3/8 = 0.375
    out, _ = q8.stochastic_shift(u, 3, key=5, counter=0)
    assert set(out.tolist()) == {0, 1}
    assert abs(out.mean() - 0.375) < 0.02
    neg, _ = q8.stochastic_shift(-u, 3, key=5, counter=0)
    assert abs(neg.mean() + 0.375) < 0.02


def test_quantize_picks_tightest_format_and_round_trips() -> None:
    floats = init_params(PAPER, 0)
    floats["b1"][...] = np.linspace(-0.9, 0.9, 32)
    qp, fmt = q8.quantize(PAPER, floats)
    assert all(v.dtype == np.int8 for v in qp.values())
    for i in range(PAPER.num_layers):
        for kind, fracs in (("W", fmt.weight_frac), ("b", fmt.bias_frac)):
            f = fracs[i]
            m = float(np.abs(floats[f"{kind}{i}"]).max())
            if m == 0:
                continue
            assert np.floor(m * 2**f + 0.5) <= 127
            if f < q8.MAX_FRAC and not (kind == "b" and f == fmt.weight_frac[i] + 7):
                assert np.floor(m * 2 ** (f + 1) + 0.5) > 127  # one more bit would overflow
    assert fmt.bias_frac[1] == 7  # 0.9 · 2^7 = 115 fits, 0.9 · 2^8 does not
    back = q8.dequantize(qp, fmt)
    for name in floats:
        i = int(name[1:])
        f = (fmt.weight_frac if name[0] == "W" else fmt.bias_frac)[i]
        assert np.abs(back[name] - floats[name]).max() <= 0.5 / 2**f + 1e-7


def test_quantize_refuses_bad_models() -> None:
    floats = init_params(PAPER, 0)
    bad = clone(floats)
    bad["W1"][0, 0] = np.nan
    with pytest.raises(ParamsError):
        q8.quantize(PAPER, bad)
    with pytest.raises(ParamsError):
        q8.quantize(PAPER, {k: v.astype(np.float64) for k, v in floats.items()})
    for spec in (
        MLPSpec((784, 40, 10), ("relu", "sigmoid"), "bce"),
        MLPSpec((784, 40, 10), ("tanh", "softmax"), "ce"),
        MLPSpec((784, 40, 10), ("tanh", "sigmoid"), "mse"),
        MLPSpec((2048, 10), ("sigmoid",), "bce"),
    ):
        with pytest.raises(q8.Q8Error):
            q8.quantize(spec, init_params(spec, 0))


@pytest.mark.parametrize(
    ("wf", "bf"), [((7,), (7, 7)), ((15, 7), (7, 7)), ((3, 3), (11, 3)), ((-1, 3), (3, 3))]
)
def test_bad_formats_refused(wf: tuple[int, ...], bf: tuple[int, ...]) -> None:
    with pytest.raises(q8.Q8Error):
        q8.Q8Format(wf, bf)


def load_kat() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(KAT.read_text())
    return data


def test_kat_reproduced_exactly() -> None:
    kat = load_kat()
    c = kat["config"]
    spec = MLPSpec(tuple(c["sizes"]), tuple(c["activations"]), c["loss"])
    fmt = q8.Q8Format(tuple(kat["format"]["weight_frac"]), tuple(kat["format"]["bias_frac"]))
    assert kat["tables"]["tanh"] == q8.TANH_TABLE.tolist()
    assert kat["tables"]["sigmoid"] == q8.SIGMOID_TABLE.tolist()
    x = np.array(kat["x"], dtype=np.uint8)
    y = np.array(kat["y"], dtype=np.int64)
    init0 = {k: np.array(v, dtype=np.int8) for k, v in kat["cases"][0]["init"].items()}
    outs = q8.forward(spec, fmt, init0, x)
    assert [o.tolist() for o in outs] == kat["forward_init"]
    assert [case["layer"] for case in kat["cases"]] == [None, 0, 1]
    for case in kat["cases"]:
        for steps, expected in case["after_steps"].items():
            params = {k: np.array(v, dtype=np.int8) for k, v in case["init"].items()}
            trainer = q8.LSGDQ8Trainer(
                spec, fmt, lr_shift=c["lr_shift"], seed=c["seed"], layer=case["layer"]
            )
            trainer.train(params, x[: int(steps)], y[: int(steps)])
            assert trainer.counter == case["counter_after_steps"][steps]
            for name, want in expected.items():
                np.testing.assert_array_equal(
                    params[name], np.array(want, dtype=np.int8), err_msg=f"{case['name']} {name}"
                )
                if case["layer"] is not None and not name.endswith(str(case["layer"])):
                    assert want == case["init"][name]
                elif name.startswith("W"):
                    assert want != case["init"][name], f"{case['name']}: {name} did not change"


def test_kat_file_equals_a_fresh_regeneration() -> None:
    spec = importlib.util.spec_from_file_location("make_kat", KAT.parent / "make_kat.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.lsgd_q8_kat() == load_kat()


@pytest.mark.parametrize("layer", [0, 1])
def test_single_layer_changes_only_its_layer(layer: int) -> None:
    params, fmt = small_model()
    before = clone(params)
    x, y = small_batch()
    trainer = q8.LSGDQ8Trainer(SMALL, fmt, lr_shift=2, layer=layer)
    trainer.train(params, x, y, epochs=2)
    for name in params:
        assert np.array_equal(params[name], before[name]) == (not name.endswith(str(layer)))
    assert trainer.updated_names() == [f"W{layer}", f"b{layer}"]


def test_counter_continues_across_calls() -> None:
    params_a, fmt = small_model()
    params_b = clone(params_a)
    x, y = small_batch()
    one = q8.LSGDQ8Trainer(SMALL, fmt, lr_shift=2, seed=3)
    one.train(params_a, x, y)
    split = q8.LSGDQ8Trainer(SMALL, fmt, lr_shift=2, seed=3)
    split.train(params_b, x[:2], y[:2])
    resumed = q8.LSGDQ8Trainer(SMALL, fmt, lr_shift=2, seed=3, counter=split.counter)
    resumed.train(params_b, x[2:], y[2:])
    assert resumed.counter == one.counter == 6 * (16 * 8 + 8 + 8 * 4 + 4)
    for name in params_a:
        np.testing.assert_array_equal(params_a[name], params_b[name])


def test_rng_shuffle_is_deterministic_and_stats_count() -> None:
    x, y = small_batch(n=8)
    results = []
    for rng in (None, np.random.default_rng(4), np.random.default_rng(4)):
        params, fmt = small_model()
        trainer = q8.LSGDQ8Trainer(SMALL, fmt, lr_shift=2)
        stats = trainer.train(params, x, y, epochs=2, rng=rng)
        assert (stats.samples, stats.steps) == (16, 16)
        results.append(params)
    for name in results[0]:
        np.testing.assert_array_equal(results[1][name], results[2][name])
    assert any(not np.array_equal(results[0][k], results[1][k]) for k in results[0])


def test_weights_saturate_instead_of_wrapping() -> None:
    base, fmt = small_model()
    # 14 fractional bits on W1: every update is many int8 steps, none lost to rounding.
    fmt = q8.Q8Format((fmt.weight_frac[0], 14), fmt.bias_frac)
    x, y = small_batch(n=1)
    label = int(y[0])
    hidden = q8.forward(SMALL, fmt, base, x)[0][0]
    big = np.abs(hidden) > 16
    assert big.sum() >= 4
    # The label's column points along the hidden output and the others against it, each at
    # the int8 bound (or one step inside): every delta then pushes every weight outward.
    along = np.where(hidden > 0, 127, -128)[:, None]
    bounds = np.where(np.arange(4) == label, along, -1 - along)
    ends = []
    for inset in (0, 1):
        params = clone(base)
        params["W1"][...] = bounds - np.sign(bounds) * inset
        q8.LSGDQ8Trainer(SMALL, fmt, lr_shift=0, layer=1).train(params, x, y)
        ends.append(params["W1"].astype(np.int64))
    # One step inside the range, the weights fed by a large |a| move out to the bound ...
    np.testing.assert_array_equal(ends[1][big], bounds[big])
    # ... and at the bound the same push leaves every weight there instead of wrapping round.
    np.testing.assert_array_equal(ends[0], bounds)


def test_trainer_interface_and_state_bytes() -> None:
    fmt = q8.Q8Format((9, 8, 8), (10, 10, 9))
    trainer = q8.LSGDQ8Trainer(PAPER, fmt)
    assert isinstance(trainer, Trainer) and trainer.name == "lsgd-q8"
    # two int32 deltas of width 40, int8 outputs 40 + 32 + 10, the uint32 counter
    assert trainer.state_bytes == 2 * 4 * 40 + 82 + 4
    assert trainer.lr == 2.0**-7


BAD_INPUTS = [
    ("float pixels", lambda x, y: (x.astype(np.float32), y)),
    ("wrong width", lambda x, y: (x[:, :15], y)),
    ("pixel 256", lambda x, y: (x.astype(np.int32) + 255, y)),
    ("negative pixel", lambda x, y: (x.astype(np.int32) - 256, y)),
    ("label 4", lambda x, y: (x, y + 4)),
    ("label -1", lambda x, y: (x, y - 4)),
    ("float labels", lambda x, y: (x, y.astype(np.float32))),
    ("short labels", lambda x, y: (x, y[:3])),
]


@pytest.mark.parametrize(("what", "mangle"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_inputs_refused_and_params_untouched(what: str, mangle: Any) -> None:
    params, fmt = small_model()
    before = clone(params)
    trainer = q8.LSGDQ8Trainer(SMALL, fmt, lr_shift=2)
    bad_x, bad_y = mangle(*small_batch())
    with pytest.raises(IntegerInputError):
        trainer.train(params, bad_x, bad_y)
    assert trainer.counter == 0
    for name in params:
        np.testing.assert_array_equal(params[name], before[name])


def test_bad_params_and_options_refused() -> None:
    params, fmt = small_model()
    x, y = small_batch()
    trainer = q8.LSGDQ8Trainer(SMALL, fmt)
    with pytest.raises(ParamsError):
        trainer.train({k: v.astype(np.int16) for k, v in params.items()}, x, y)
    with pytest.raises(TrainerConfigError):
        trainer.train(params, x, y, epochs=0)
    with pytest.raises(TrainerConfigError):
        trainer.train(params, x, y, rng=3)  # type: ignore[arg-type]
    for kw in ({"lr_shift": 11}, {"lr_shift": -1}, {"seed": -1}, {"layer": 2}, {"layer": True}):
        with pytest.raises(TrainerConfigError):
            q8.LSGDQ8Trainer(SMALL, fmt, **kw)
    with pytest.raises(q8.Q8Error):
        q8.LSGDQ8Trainer(SMALL, q8.Q8Format((7,), (7,)))


@pytest.mark.slow
def test_fine_tuning_a_quantized_model_raises_accuracy() -> None:
    ds = load_dataset("mnist-10k")
    x_test, y_test = ds.x_test[:1000], ds.y_test[:1000]
    floats = init_params(PAPER, 0)
    LSGDTrainer(PAPER, 0.01).train(
        floats, ds.x_train[:300].astype(np.float32) / 255, ds.y_train[:300]
    )
    float_acc = float_accuracy(PAPER, floats, x_test.astype(np.float32) / 255, y_test)
    qp, fmt = q8.quantize(PAPER, floats)
    before = q8.accuracy(PAPER, fmt, qp, x_test, y_test)
    assert abs(before - float_acc) < 0.05  # quantization keeps the model's behaviour
    q8.LSGDQ8Trainer(PAPER, fmt, lr_shift=6).train(qp, ds.x_train[300:1800], ds.y_train[300:1800])
    after = q8.accuracy(PAPER, fmt, qp, x_test, y_test)
    assert after >= before + 0.1
    assert after >= 0.75
