"""Top-P on the device (firmware/src/topp.c) and the TinyMetaFed inner loop, against numpy.

The inner loop (one pass, batch 1, L-SGD) is bit-exact with ``eddl.learn`` for lsgd-q8 and
within float tolerance for float L-SGD; the device's top-P selection of its own ``φ − θ`` is
bit-exact with :func:`eddl.learn.topp.top_p` (same entries, same values, ties by position).
Every case runs on the host simulator and under QEMU on the Cortex-M3 (AN385), the Cortex-M4F
(AN386) and the Cortex-M7 (AN500) images.
"""

from __future__ import annotations

import numpy as np
import pytest

from eddl.learn import lsgd_q8
from eddl.learn.lsgd import LSGDTrainer
from eddl.learn.model import MLPSpec, init_params
from eddl.learn.topp import SparseDelta, top_p
from eddl.mcu.driver import Device, DeviceError
from eddl.mcu.launch import Launched
from eddl.mcu.plan import arena_need
from eddl.mcu.protocol import Act, Algo, ErrorCode, Loss, MsgType, SetupSpec
from eddl.mcu.session import DeviceModel
from eddl.mcu.topp import device_top_p, device_top_p_int8, select, snapshot
from eddl.net.sparse import encode_sparse
from eddl.proto.v1 import common_pb2

MLP = MLPSpec(sizes=(24, 16, 12, 5), activations=("tanh", "tanh", "sigmoid"), loss="bce")
ACTS = tuple(Act[a.upper()] for a in MLP.activations)


def _data(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, MLP.sizes[0]), dtype=np.uint8), rng.integers(0, 5, n)


def _spec(algo: Algo, n: int, shared: int) -> SetupSpec:
    return SetupSpec(algo, MLP.sizes, n, 1, ACTS, Loss.BCE, shared_layers=shared)


def _assert_same_selection(got: dict[str, SparseDelta], want: dict[str, SparseDelta]) -> None:
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_array_equal(got[name].indices, want[name].indices, err_msg=name)
        np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)


@pytest.mark.parametrize(("shared", "p"), [(2, 10.0), (3, 37.5), (1, 100.0)])
def test_lsgd_inner_loop_and_top_p_match_numpy(board: Launched, shared: int, p: float) -> None:
    x, y = _data(shared, 20)
    theta = init_params(MLP, shared)
    ref = {k: v.copy() for k, v in theta.items()}
    LSGDTrainer(MLP, 0.05).train(ref, x.astype(np.float32) / np.float32(255.0), y)
    with Device.open(board.url, timeout=3.0) as dev:
        spec = _spec(Algo.LSGD, len(x), shared)
        model = DeviceModel(dev, spec)
        assert model.arena_used == arena_need(spec)
        model.load_params(theta)
        assert snapshot(dev) == sum(
            theta[n].size for i in range(shared) for n in (f"W{i}", f"b{i}")
        )
        model.load_samples(x, y)
        dev.train(len(x), lr=0.05, timeout=60.0)
        phi = model.read_params()
        selected = device_top_p(dev, spec, p)
    for name, value in ref.items():
        np.testing.assert_allclose(phi[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    names = [f"{k}{i}" for i in range(shared) for k in ("W", "b")]
    _assert_same_selection(selected, top_p({n: phi[n] - theta[n] for n in names}, p))
    if p == 100.0:
        for n in names:
            np.testing.assert_array_equal(selected[n].values, (phi[n] - theta[n]).ravel())


@pytest.mark.parametrize(("shared", "p"), [(2, 10.0), (3, 1.0), (3, 100.0)])
def test_lsgd_q8_inner_loop_and_top_p_are_bit_exact(board: Launched, shared: int, p: float) -> None:
    x, y = _data(10 + shared, 16)
    floats = init_params(MLP, 5)
    for i, v in enumerate(floats.values()):  # different formats per layer
        v *= np.float32(1.0 + i)
    theta, fmt = lsgd_q8.quantize(MLP, floats)
    ref = {k: v.copy() for k, v in theta.items()}
    lsgd_q8.LSGDQ8Trainer(MLP, fmt, lr_shift=3, seed=9).train(ref, x, y)
    with Device.open(board.url, timeout=3.0) as dev:
        spec = _spec(Algo.LSGD_Q8, len(x), shared)
        model = DeviceModel(dev, spec)
        assert model.arena_used == arena_need(spec)
        model.load_params(theta)
        model.load_q8_format(fmt.weight_frac, fmt.bias_frac, seed=9)
        snapshot(dev)
        model.load_samples(x, y)
        dev.train(len(x), lr_inv=3, timeout=60.0)
        phi = model.read_params()
        selected = device_top_p(dev, spec, p, weight_frac=fmt.weight_frac, bias_frac=fmt.bias_frac)
    for name, value in ref.items():
        np.testing.assert_array_equal(phi[name], value, err_msg=name)
    delta = {}
    for i in range(shared):
        for k, f in (("W", fmt.weight_frac[i]), ("b", fmt.bias_frac[i])):
            d = ref[f"{k}{i}"].astype(np.int32) - theta[f"{k}{i}"].astype(np.int32)
            delta[f"{k}{i}"] = d.astype(np.float32) * np.float32(2.0**-f)
    _assert_same_selection(selected, top_p(delta, p))


def _int8_reference(selected: dict[str, SparseDelta]) -> list[common_pb2.SparseTensor]:
    return [
        encode_sparse(n, s.shape, s.indices, s.values, value_dtype="int8")
        for n, s in selected.items()
    ]


def _assert_same_records(got: list[common_pb2.SparseTensor], want: list[common_pb2.SparseTensor]):
    assert [m.name for m in got] == [m.name for m in want]
    for g, w in zip(got, want, strict=True):
        assert g.SerializeToString() == w.SerializeToString(), g.name  # indexes, int8, scale


@pytest.mark.parametrize(("algo", "p"), [(Algo.LSGD, 10.0), (Algo.LSGD_Q8, 25.0)])
def test_int8_records_from_the_device_are_the_wire_encoding_bit_for_bit(
    board: Launched, algo: Algo, p: float
) -> None:
    """The device's int8 values and scales are ``encode_sparse(..., "int8")`` of its float
    records (lsgd), and of numpy's own selection (lsgd-q8, where the floats are exact)."""
    x, y = _data(40, 24)
    shared = 2
    floats = init_params(MLP, 6)
    with Device.open(board.url, timeout=3.0) as dev:
        spec = _spec(algo, len(x), shared)
        model = DeviceModel(dev, spec)
        if algo == Algo.LSGD_Q8:
            theta, fmt = lsgd_q8.quantize(MLP, floats)
            ref = {k: v.copy() for k, v in theta.items()}
            lsgd_q8.LSGDQ8Trainer(MLP, fmt, lr_shift=2, seed=4).train(ref, x, y)
            model.load_params(theta)
            model.load_q8_format(fmt.weight_frac, fmt.bias_frac, seed=4)
            snapshot(dev)
            model.load_samples(x, y)
            dev.train(len(x), lr_inv=2, timeout=60.0)
            frac = {"weight_frac": fmt.weight_frac, "bias_frac": fmt.bias_frac}
        else:
            model.load_params(floats)
            snapshot(dev)
            model.load_samples(x, y)
            dev.train(len(x), lr=0.1, timeout=60.0)
            frac = {}
        got = device_top_p_int8(dev, spec, p)
        floats_read = device_top_p(dev, spec, p, **frac)  # the same selection, float values
    assert sum(m.count for m in got) > 0
    _assert_same_records(got, _int8_reference(floats_read))
    if algo == Algo.LSGD_Q8:
        delta = {}
        for i in range(shared):
            for k, f in (("W", fmt.weight_frac[i]), ("b", fmt.bias_frac[i])):
                d = ref[f"{k}{i}"].astype(np.int32) - theta[f"{k}{i}"].astype(np.int32)
                delta[f"{k}{i}"] = d.astype(np.float32) * np.float32(2.0**-f)
        _assert_same_records(got, _int8_reference(top_p(delta, p)))


def test_ties_are_taken_by_position_across_tensors(board: Launched) -> None:
    """Many equal magnitudes, of both signs: the k kept are the first by (tensor, index)."""
    rng = np.random.default_rng(3)
    theta = init_params(MLP, 1)
    phi = {k: v.copy() for k, v in theta.items()}
    for name in ("W0", "b0", "W1", "b1"):
        steps = rng.choice(np.array([0.0, 0.25, -0.25, 0.5, -0.5], np.float32), phi[name].shape)
        phi[name] = (theta[name] + steps).astype(np.float32)
    names = ["W0", "b0", "W1", "b1"]
    delta = {n: phi[n] - theta[n] for n in names}
    total = sum(d.size for d in delta.values())
    with Device.open(board.url, timeout=3.0) as dev:
        spec = _spec(Algo.LSGD, 4, 2)
        model = DeviceModel(dev, spec)
        model.load_params(theta)
        snapshot(dev)
        model.load_params(phi)
        for k in (1, 7, 100, 333, total):
            sel = select(dev, spec, k)
            assert sum(sel.kept.values()) == k
            got = device_top_p(dev, spec, 100.0 * k / total)
            _assert_same_selection(got, top_p(delta, 100.0 * k / total))


def test_top_p_requests_are_checked_and_change_nothing(board: Launched) -> None:
    with Device.open(board.url, timeout=3.0) as dev:
        tifed = SetupSpec(Algo.TIFED, (8, 4, 2), 2, 1, shared_layers=1)
        with pytest.raises(DeviceError) as err:
            dev.setup(tifed)
        assert err.value.code == ErrorCode.BAD_ARG
        spec = _spec(Algo.LSGD, 4, 1)
        model = DeviceModel(dev, spec)
        model.load_params(init_params(MLP, 0))

        def code(payload: bytes) -> ErrorCode | int:
            with pytest.raises(DeviceError) as err:
                dev.request(MsgType.TOPP, payload)
            return err.value.code

        assert code(bytes([1, 1, 0, 0, 0])) == ErrorCode.NOT_READY  # no snapshot yet
        entries = snapshot(dev)
        assert code(bytes([2, 0, 0, 0, 0, 0, 1, 0])) == ErrorCode.NOT_READY  # nothing selected
        assert code(bytes([1, 0, 0, 0, 0])) == ErrorCode.BAD_ARG  # k = 0
        assert code(bytes([1, *(entries + 1).to_bytes(4, "little")])) == ErrorCode.BAD_ARG
        assert code(bytes([7])) == ErrorCode.BAD_ARG  # unknown sub-command
        assert code(b"") == ErrorCode.BAD_ARG
        select(dev, spec, 3)
        assert code(bytes([2, 4, 0, 0, 0, 0, 1, 0])) == ErrorCode.BAD_ARG  # layer 1 not shared
        assert code(bytes([2, 2, 0, 0, 0, 0, 1, 0])) == ErrorCode.BAD_ARG  # not W or b
        assert code(bytes([2, 0, 9, 0, 0, 0, 1, 0])) == ErrorCode.BAD_ARG  # past the kept
        assert code(bytes([2, 0, 0, 0, 0, 0, 0, 0])) == ErrorCode.BAD_ARG  # zero records
        # A refused request left the selection as it was; a LOAD of weights ends it.
        assert dev.request(MsgType.TOPP, bytes([2, 0, 0, 0, 0, 0, 1, 0]))
        model.load_params(init_params(MLP, 1))
        assert code(bytes([2, 0, 0, 0, 0, 0, 1, 0])) == ErrorCode.NOT_READY
        plain = DeviceModel(dev, _spec(Algo.LSGD, 4, 0))
        assert plain.arena_used == arena_need(plain.spec)
        assert code(bytes([0])) == ErrorCode.BAD_ARG  # no snapshot planned
