"""Float samples on the device (SETUP's sample format): the TinyMetaFed inner loop on sine
(float32 inputs and regression targets, MSE) and presence (float32 features, class labels)
agrees with numpy to float tolerance, and the device's top-P of its own ``φ − θ`` is
:func:`eddl.learn.topp.top_p`'s, on the host simulator and under QEMU on the Cortex-M3
(AN385), the Cortex-M4F (AN386) and the Cortex-M7 (AN500) images. Bad float input is refused
with nothing changed."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from eddl.data.metatasks import sine_tasks
from eddl.data.presence import presence_tasks
from eddl.learn.lsgd import LSGDTrainer
from eddl.learn.metamodel import Regressor
from eddl.learn.model import MLPSpec, init_params
from eddl.learn.sgd import SGDTrainer
from eddl.learn.topp import SparseDelta, top_p
from eddl.mcu.driver import Device, DeviceError
from eddl.mcu.launch import Launched
from eddl.mcu.plan import arena_need
from eddl.mcu.protocol import (
    TENSOR_X,
    TENSOR_Y,
    Act,
    Algo,
    ErrorCode,
    Loss,
    MsgType,
    SampleFormat,
    SetupSpec,
    setup_payload,
)
from eddl.mcu.session import DeviceModel

FLOATS = SampleFormat.FLOAT_INPUTS | SampleFormat.FLOAT_TARGETS


def _assert_same_selection(got: dict[str, SparseDelta], want: dict[str, SparseDelta]) -> None:
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_array_equal(got[name].indices, want[name].indices, err_msg=name)
        np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)


def _device_pass(
    url: str, spec: SetupSpec, theta: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, p: float
) -> tuple[dict[str, np.ndarray], dict[str, SparseDelta]]:
    """One inner loop on the device: load θ, snapshot, one pass (batch 1), top-P records."""
    from eddl.mcu.topp import device_top_p, snapshot

    with Device.open(url, timeout=3.0) as dev:
        model = DeviceModel(dev, spec)
        assert model.arena_used == arena_need(spec)
        model.load_params(theta)
        snapshot(dev)
        model.load_samples(x, y)
        dev.train(len(x), lr=0.02, timeout=60.0)
        return model.read_params(), device_top_p(dev, spec, p)


def test_hello_says_setup_takes_float_samples(board: Launched) -> None:
    """HELLO's flag bit 1 (firmware 0.2.0): the host can tell this firmware from one whose
    SETUP refuses the sample format, before any task."""
    with Device.open(board.url, timeout=3.0) as dev:
        info = dev.info
        assert info is not None and info.firmware_version == "0.2.0" and info.float_samples
        dev.stats()  # a numbered request executed: bit 0 joins bit 1
        again = dev.hello()
        assert again.last_seq is not None and again.float_samples


@pytest.mark.parametrize(("shared", "p"), [(2, 10.0), (3, 100.0)])
def test_sine_inner_loop_matches_the_regressor(board: Launched, shared: int, p: float) -> None:
    task = sine_tasks(2, 1, seed=shared, samples=20).train[1]
    x, y = task.x_train, task.y_train
    assert x.dtype == y.dtype == np.float32 and np.abs(x).max() > 1.0  # not pixels
    net = Regressor((1, 16, 12, 1))
    theta = net.init_params(shared)
    ref = {k: v.copy() for k, v in theta.items()}
    net.train_pass(ref, x, y, 0.02)
    acts = (Act.TANH, Act.TANH, Act.LINEAR)
    spec = SetupSpec(
        Algo.LSGD, net.sizes, len(x), 1, acts, Loss.MSE, shared_layers=shared, sample_format=FLOATS
    )
    phi, selected = _device_pass(board.url, spec, theta, x, y, p)
    for name, value in ref.items():
        np.testing.assert_allclose(phi[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    assert any(not np.array_equal(ref[n], theta[n]) for n in theta)  # it learned
    names = [f"{k}{i}" for i in range(shared) for k in ("W", "b")]
    _assert_same_selection(selected, top_p({n: phi[n] - theta[n] for n in names}, p))


def test_presence_inner_loop_matches_lsgd(board: Launched) -> None:
    task = presence_tasks(2, 1, seed=4, samples=12).train[0]
    x, y = task.x_train, task.y_train
    assert x.dtype == np.float32 and np.unique(y).size == 2
    mlp = MLPSpec((x.shape[1], 16, 8, 2), ("tanh", "tanh", "sigmoid"), "bce")
    theta = init_params(mlp, 7)
    ref = {k: v.copy() for k, v in theta.items()}
    LSGDTrainer(mlp, 0.02).train(ref, x, y)
    acts = (Act.TANH, Act.TANH, Act.SIGMOID)
    spec = SetupSpec(
        Algo.LSGD,
        mlp.sizes,
        len(x),
        1,
        acts,
        Loss.BCE,
        shared_layers=2,
        sample_format=SampleFormat.FLOAT_INPUTS,
    )
    phi, selected = _device_pass(board.url, spec, theta, x, y, 20.0)
    for name, value in ref.items():
        np.testing.assert_allclose(phi[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    names = ["W0", "b0", "W1", "b1"]
    _assert_same_selection(selected, top_p({n: phi[n] - theta[n] for n in names}, 20.0))


def test_sgd_mini_batches_read_float_features_too(board: Launched) -> None:
    """The SGD baseline shares the input path: float32 features (beyond [0, 1], negative)
    with mini-batches of 5, against SGDTrainer."""
    rng = np.random.default_rng(8)
    mlp = MLPSpec((10, 8, 3), ("tanh", "sigmoid"), "bce")
    x = rng.normal(0.0, 2.0, (20, 10)).astype(np.float32)
    y = rng.integers(0, 3, 20)
    theta = init_params(mlp, 8)
    ref = {k: v.copy() for k, v in theta.items()}
    SGDTrainer(mlp, 0.05, 5).train(ref, x, y, epochs=2)
    spec = SetupSpec(
        Algo.SGD,
        mlp.sizes,
        20,
        5,
        (Act.TANH, Act.SIGMOID),
        Loss.BCE,
        sample_format=SampleFormat.FLOAT_INPUTS,
    )
    with Device.open(board.url, timeout=3.0) as dev:
        model = DeviceModel(dev, spec)
        assert model.arena_used == arena_need(spec)
        model.load_params(theta)
        model.load_samples(x, y)
        dev.train(20, batch=5, epochs=2, lr=0.05, timeout=60.0)
        got = model.read_params()
    for name, value in ref.items():
        assert not np.allclose(value, theta[name]), f"{name} did not train"
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


def _code(dev: Device, type_: MsgType, payload: bytes) -> ErrorCode | int:
    with pytest.raises(DeviceError) as err:
        dev.request(type_, payload)
    return err.value.code


def _f32(values: list[float]) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def test_bad_float_samples_are_refused_and_change_nothing(board: Launched) -> None:
    sizes = (3, 8, 2)
    acts = (Act.TANH, Act.LINEAR)
    spec = SetupSpec(Algo.LSGD, sizes, 4, 1, acts, Loss.MSE, sample_format=FLOATS)
    rng = np.random.default_rng(1)
    x = rng.normal(0, 3, (4, 3)).astype(np.float32)
    y = rng.normal(0, 1, (4, 2)).astype(np.float32)
    with Device.open(board.url, timeout=3.0) as dev:
        model = DeviceModel(dev, spec)
        model.load_params(init_params(MLPSpec(sizes, ("tanh", "sigmoid"), "mse"), 0))
        model.load_samples(x, y)
        before = model.read_params()
        stats = dev.stats()
        base = setup_payload(SetupSpec(Algo.LSGD, sizes, 4, 1, acts, Loss.MSE))

        # SETUP: unknown format bits, two format bytes, float samples for an integer kernel,
        # float targets under a loss that is not MSE.
        assert _code(dev, MsgType.SETUP, base + b"\x04") == ErrorCode.BAD_ARG
        assert _code(dev, MsgType.SETUP, base + b"\x03\x00") == ErrorCode.BAD_ARG
        tifed = setup_payload(SetupSpec(Algo.TIFED, sizes, 4, 1))
        assert _code(dev, MsgType.SETUP, tifed + b"\x01") == ErrorCode.BAD_ARG
        q8 = setup_payload(SetupSpec(Algo.LSGD_Q8, sizes, 4, 1, (Act.TANH, Act.SIGMOID)))
        assert _code(dev, MsgType.SETUP, q8 + b"\x01") == ErrorCode.BAD_ARG
        bce = setup_payload(SetupSpec(Algo.LSGD, sizes, 4, 1, (Act.TANH, Act.SIGMOID)))
        assert _code(dev, MsgType.SETUP, bce + b"\x02") == ErrorCode.BAD_ARG

        # A buffer that fits as pixels but not as floats: NO_MEMORY, the model stays.
        arena = dev.info.arena_bytes if dev.info else 0
        wide = (1000, 8, 2)
        cap = next(
            c
            for c in range(1, 0x10000)
            if arena_need(SetupSpec(Algo.LSGD, wide, c, 1, acts, Loss.MSE, sample_format=FLOATS))
            > arena
        )
        pixels = SetupSpec(Algo.LSGD, wide, cap, 1, acts, Loss.MSE)
        assert arena_need(pixels) <= arena
        big = setup_payload(pixels) + bytes([int(FLOATS)])
        assert _code(dev, MsgType.SETUP, big) == ErrorCode.NO_MEMORY

        # LOAD: NaN or Inf among the float inputs or targets, ragged floats, past the buffer.
        nan_x = struct.pack("<BI", TENSOR_X, 0) + _f32([1.0, float("nan"), 2.0])
        assert _code(dev, MsgType.LOAD, nan_x) == ErrorCode.NOT_FINITE
        inf_y = struct.pack("<BI", TENSOR_Y, 8) + _f32([float("inf"), 0.5])
        assert _code(dev, MsgType.LOAD, inf_y) == ErrorCode.NOT_FINITE
        ragged = struct.pack("<BI", TENSOR_X, 0) + b"\x00\x00\x80"
        assert _code(dev, MsgType.LOAD, ragged) == ErrorCode.BAD_ARG
        past = struct.pack("<BI", TENSOR_Y, 4 * 2 * 4) + _f32([1.0])
        assert _code(dev, MsgType.LOAD, past) == ErrorCode.BAD_ARG
        # PREDICT answers labels: a regression model has none.
        assert _code(dev, MsgType.PREDICT, struct.pack("<H", 4)) == ErrorCode.BAD_ARG

        assert dev.read(TENSOR_X, 4 * 3 * 4) == x.astype("<f4").tobytes()
        assert dev.read(TENSOR_Y, 4 * 2 * 4) == y.astype("<f4").tobytes()
        after = model.read_params()
        for name, value in before.items():
            np.testing.assert_array_equal(after[name], value, err_msg=name)
        assert dev.stats().arena_used == stats.arena_used == model.arena_used
        # The model still trains on the samples it holds.
        assert dev.train(4, lr=0.05)[0] == 4


def test_pixel_setups_are_byte_for_byte_as_before(board: Launched) -> None:
    """A pixel model's SETUP carries no format byte; an explicit zero byte plans the same."""
    spec = SetupSpec(Algo.LSGD, (24, 16, 5), 10, 1, (Act.TANH, Act.SIGMOID), Loss.BCE)
    payload = setup_payload(spec)
    assert len(payload) == 10 + 2 * 3 + 2
    with Device.open(board.url, timeout=3.0) as dev:
        used = struct.unpack("<II", dev.request(MsgType.SETUP, payload))[0]
        assert used == arena_need(spec)
        again = struct.unpack("<II", dev.request(MsgType.SETUP, payload + b"\x00"))[0]
        assert again == used
