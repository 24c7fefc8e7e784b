from __future__ import annotations

import numpy as np
import pytest

from eddl.learn.algorithms import AlgorithmError, default_model, get_algorithm

PIXELS = np.random.default_rng(0).integers(0, 256, (30, 64), dtype=np.uint8)
LABELS = np.arange(30, dtype=np.int64) % 10


@pytest.mark.parametrize("name", ["sgd", "lsgd", "tifed", "tifed-single"])
def test_every_algorithm_trains_and_evaluates(name: str) -> None:
    algo = get_algorithm(name, default_model(name, 64), {})
    params = algo.init_params(seed=1)
    layer = 0 if algo.single_layer else None
    trainer = algo.make_trainer(layer=layer)
    before = {k: v.copy() for k, v in params.items()}
    trainer.train(params, algo.prepare_inputs(PIXELS), LABELS)
    assert any(not np.array_equal(before[k], params[k]) for k in params)
    acc = algo.evaluate(params, PIXELS, LABELS)
    assert 0.0 <= acc <= 1.0


def test_float_inputs_are_scaled_pixels_and_tifed_takes_raw_pixels() -> None:
    f = get_algorithm("lsgd", default_model("lsgd", 64))
    x = f.prepare_inputs(PIXELS)
    assert x.dtype == np.float32 and np.allclose(x * 255, PIXELS)
    t = get_algorithm("tifed", default_model("tifed", 64))
    assert t.prepare_inputs(PIXELS) is PIXELS


def test_sync_rule_and_layer_modes() -> None:
    assert get_algorithm("sgd", default_model("sgd", 64)).sync_rule_name == "fedavg"
    single = get_algorithm("tifed-single", default_model("tifed", 64))
    assert single.sync_rule_name == "intmean" and single.num_layers == 2
    with pytest.raises(AlgorithmError, match="layer"):
        single.make_trainer()
    with pytest.raises(AlgorithmError, match="layer"):
        get_algorithm("tifed", default_model("tifed", 64)).make_trainer(layer=1)
    with pytest.raises(AlgorithmError, match="layer"):
        get_algorithm("lsgd", default_model("lsgd", 64)).make_trainer(layer=0)


@pytest.mark.parametrize(
    ("name", "model", "hyper", "message"),
    [
        ("adam", {"sizes": [4, 2]}, {}, "unknown algorithm"),
        ("lsgd", default_model("lsgd", 64), {"momentum": 0.9}, "unknown hyper"),
        ("lsgd", {"sizes": [64, 10], "activations": ["nope"], "loss": "bce"}, {}, "lsgd"),
        ("tifed", {"sizes": [64, 10], "activations": ["tanh"]}, {}, "unknown model key"),
        ("tifed", {"sizes": [64]}, {}, "tifed"),
    ],
)
def test_bad_algorithm_requests_are_refused(
    name: str, model: dict[str, object], hyper: dict[str, object], message: str
) -> None:
    with pytest.raises(AlgorithmError, match=message):
        get_algorithm(name, model, hyper)


def test_non_pixel_inputs_are_refused() -> None:
    algo = get_algorithm("lsgd", default_model("lsgd", 64))
    with pytest.raises(AlgorithmError, match="uint8"):
        algo.prepare_inputs(PIXELS.astype(np.float32))


def test_lsgd_q8_fine_tunes_a_quantized_float_model() -> None:
    from eddl.learn.algorithms import Q8Algorithm

    model = default_model("lsgd-q8", 64)
    float_algo = get_algorithm("lsgd", model)
    float_params = float_algo.init_params(seed=2)
    float_algo.make_trainer().train(float_params, float_algo.prepare_inputs(PIXELS), LABELS)
    algo, q8 = Q8Algorithm.from_float(model, float_params, {"lr_shift": 6})
    assert all(v.dtype == np.int8 for v in q8.values())
    assert algo.sync_rule_name == "fedavg"
    before = {k: v.copy() for k, v in q8.items()}
    algo.make_trainer(seed=1).train(q8, algo.prepare_inputs(PIXELS), LABELS)
    assert any(not np.array_equal(before[k], q8[k]) for k in q8)
    # Same seed, same start: the stochastic rounding is reproducible.
    again = {k: v.copy() for k, v in before.items()}
    algo.make_trainer(seed=1).train(again, PIXELS, LABELS)
    assert all(np.array_equal(again[k], q8[k]) for k in q8)
    with pytest.raises(AlgorithmError, match="fine-tunes"):
        algo.init_params(0)
    with pytest.raises(AlgorithmError, match="unknown hyper"):
        Q8Algorithm.from_float(model, float_params, {"lr": 0.1})


def test_unknown_float_model_keys_are_refused() -> None:
    model = {**default_model("lsgd", 64), "dropout": 0.5}
    with pytest.raises(AlgorithmError, match="dropout"):
        get_algorithm("lsgd", model)
