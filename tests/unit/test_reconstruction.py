"""Partial local reconstruction: local layers are rebuilt on the device and never uploaded."""

from __future__ import annotations

import numpy as np
import pytest

from eddl.learn.metamodel import Classifier, Regressor
from eddl.learn.metaoptions import MetaOptions
from eddl.learn.model import MLPSpec
from eddl.learn.reconstruction import LayerSplit, ReconstructionError, reconstruct
from eddl.learn.tinymetafed import device_round
from eddl.metasim import _upload
from eddl.net.sparse import encode_sparse

SPEC = MLPSpec((6, 8, 5, 3), ("tanh", "tanh", "sigmoid"), "bce")


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.random((15, 6), dtype=np.float32), rng.integers(0, 3, 15)


@pytest.mark.parametrize(("local", "p"), [(1, 10.0), (2, 100.0), (1, 100.0)])
def test_local_layers_never_travel(local: int, p: float) -> None:
    model = Classifier(SPEC)
    split = LayerSplit(3, local)
    theta = split.shared(model.init_params(0))
    x, y = _data()
    opts = MetaOptions.from_hyper("tinymetafed", {"local_layers": local, "top_p": p}, 3)
    update = device_round(model, split, theta, x, y, opts, seed=2)
    records = [encode_sparse(n, s.shape, s.indices, s.values) for n, s in update.selected.items()]
    on_wire = {r.name for r in records}
    assert on_wire == set(split.shared_names)
    assert not on_wire & set(split.local_names)
    decoded, nbytes = _upload(update, opts, theta)
    assert set(decoded) == set(split.shared_names) and nbytes > 0


def test_reconstruction_trains_only_the_local_layers() -> None:
    model = Classifier(SPEC)
    split = LayerSplit(3, 1)
    shared = split.shared(model.init_params(0))
    before = {n: a.copy() for n, a in shared.items()}
    x, y = _data()
    full = reconstruct(model, split, shared, x, y, lr=0.5, epochs=3, seed=4)
    fresh = model.init_params(4)
    for n in split.shared_names:
        np.testing.assert_array_equal(full[n], before[n])
        np.testing.assert_array_equal(shared[n], before[n])
    assert not np.array_equal(full["W2"], fresh["W2"])


def test_regressor_head_training_leaves_the_body() -> None:
    model = Regressor((1, 8, 8, 1))
    params = model.init_params(0)
    w0 = params["W0"].copy()
    x = np.linspace(-1, 1, 10, dtype=np.float32)[:, None]
    model.train_pass(params, x, np.sin(x), 0.05, first_layer=2)
    np.testing.assert_array_equal(params["W0"], w0)


def test_bad_splits_are_refused() -> None:
    with pytest.raises(ReconstructionError):
        LayerSplit(3, 3)
    split = LayerSplit(3, 1)
    with pytest.raises(ReconstructionError):
        split.check_shared(Classifier(SPEC).init_params(0))


def test_reconstruction_starts_the_output_layer_at_zero() -> None:
    """The rebuilt head starts neutral: the device's seed does not enter a one-layer head."""
    model = Classifier(SPEC)
    split = LayerSplit(3, 1)
    shared = split.shared(model.init_params(0))
    x, y = _data()
    a = reconstruct(model, split, shared, x[:1], y[:1], lr=0.5, epochs=1, seed=4)
    b = reconstruct(model, split, shared, x[:1], y[:1], lr=0.5, epochs=1, seed=9)
    np.testing.assert_array_equal(a["W2"], b["W2"])
    assert np.any(a["W2"] != 0.0)  # one step moved it off zero
    two = LayerSplit(3, 2)  # a local layer below the output keeps its seeded draw
    c = reconstruct(model, two, two.shared(model.init_params(0)), x, y, lr=0.5, epochs=1, seed=4)
    d = reconstruct(model, two, two.shared(model.init_params(0)), x, y, lr=0.5, epochs=1, seed=9)
    assert not np.array_equal(c["W1"], d["W1"])
