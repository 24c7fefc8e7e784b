"""DeviceModel checks every array on the host: bad input raises and nothing is sent."""

from __future__ import annotations

import numpy as np
import pytest

from eddl.mcu.protocol import (
    TENSOR_X,
    TENSOR_Y,
    Act,
    Algo,
    Loss,
    ProtocolError,
    SampleFormat,
    SetupSpec,
    TensorKind,
    setup_payload,
    tensor_id,
)
from eddl.mcu.session import DeviceModel, McuInputError, param_dtype


class RecordingDevice:
    """Stands in for eddl.mcu.driver.Device: records LOADs, serves READs from them."""

    max_payload = 1024

    def __init__(self) -> None:
        self.loads: list[tuple[int, bytes]] = []
        self.store: dict[int, bytes] = {}

    def setup(self, spec: SetupSpec) -> tuple[int, int]:
        return 100, 1000

    def load(self, tensor: int, data: bytes, *, offset: int = 0) -> None:
        self.loads.append((tensor, data))
        self.store[tensor] = data

    def read(self, tensor: int, nbytes: int, *, offset: int = 0) -> bytes:
        return self.store[tensor][:nbytes]


TIFED = SetupSpec(Algo.TIFED, (6, 4, 3), capacity=5, max_batch=5)


def model(spec: SetupSpec = TIFED) -> tuple[DeviceModel, RecordingDevice]:
    dev = RecordingDevice()
    return DeviceModel(dev, spec), dev  # type: ignore[arg-type]


def test_params_round_trip_little_endian() -> None:
    m, dev = model()
    w = np.arange(24, dtype=np.int32).reshape(6, 4) - 12
    m.load_params({"W0": w}, subset=True)
    assert dev.loads == [(tensor_id(0, TensorKind.W), w.astype("<i4").tobytes())]
    np.testing.assert_array_equal(m.read_params(["W0"])["W0"], w)


@pytest.mark.parametrize(
    "params",
    [
        {"W0": np.zeros((6, 4), np.float32)},  # wrong dtype
        {"W0": np.zeros((4, 6), np.int32)},  # wrong shape
        {"W9": np.zeros((6, 4), np.int32)},  # unknown name
        {"W0": [[0] * 4] * 6},  # not an array
    ],
)
def test_bad_params_are_refused_before_sending(params: dict[str, object]) -> None:
    m, dev = model()
    with pytest.raises(McuInputError):
        m.load_params(params, subset=True)  # type: ignore[arg-type]
    assert dev.loads == []


def test_missing_params_and_nan_floats_are_refused() -> None:
    m, dev = model()
    with pytest.raises(McuInputError, match="missing"):
        m.load_params({"W0": np.zeros((6, 4), np.int32)})
    spec = SetupSpec(Algo.LSGD, (6, 4, 3), capacity=5, activations=(Act.TANH, Act.SIGMOID))
    fm, fdev = model(spec)
    params = {k: np.zeros(s, np.float32) for k, s in fm.shapes().items()}
    params["b1"][1] = np.nan
    with pytest.raises(McuInputError, match="NaN"):
        fm.load_params(params)
    assert dev.loads == [] and fdev.loads == []


@pytest.mark.parametrize(
    "x,y",
    [
        (np.zeros((2, 5), np.uint8), None),  # wrong width
        (np.zeros((6, 6), np.uint8), None),  # over capacity
        (np.zeros((2, 6), np.float32), None),  # not integer
        (np.full((2, 6), 256, np.int32), None),  # out of pixel range
        (np.zeros((2, 6), np.uint8), np.array([0, 3])),  # label out of range
        (np.zeros((2, 6), np.uint8), np.array([0])),  # label count
        (np.zeros((2, 6), np.uint8), np.array([0.0, 1.0])),  # float labels
    ],
)
def test_bad_samples_are_refused(x: np.ndarray, y: np.ndarray | None) -> None:
    m, dev = model()
    with pytest.raises(McuInputError):
        m.load_samples(x, y)
    assert dev.loads == []


def test_samples_go_to_x_and_y() -> None:
    m, dev = model()
    x = np.arange(12, dtype=np.int64).reshape(2, 6)
    m.load_samples(x, np.array([2, 0]))
    assert dev.loads == [(TENSOR_X, bytes(range(12))), (TENSOR_Y, bytes([2, 0]))]


FLOAT_SPEC = SetupSpec(
    Algo.LSGD,
    (3, 4, 2),
    capacity=4,
    activations=(Act.TANH, Act.LINEAR),
    loss=Loss.MSE,
    sample_format=SampleFormat.FLOAT_INPUTS | SampleFormat.FLOAT_TARGETS,
)


@pytest.mark.parametrize(
    "x,y",
    [
        (np.zeros((2, 3), np.uint8), np.zeros((2, 2), np.float32)),  # pixels, not floats
        (np.zeros((2, 4), np.float32), np.zeros((2, 2), np.float32)),  # wrong width
        (np.zeros((5, 3), np.float32), np.zeros((5, 2), np.float32)),  # over capacity
        (np.array([[0, np.nan, 0], [0, 0, 0]], np.float32), np.zeros((2, 2), np.float32)),
        (np.full((2, 3), 1e39), np.zeros((2, 2), np.float32)),  # beyond float32
        (np.zeros((2, 3), np.float32), np.array([0, 1])),  # labels, not targets
        (np.zeros((2, 3), np.float32), np.zeros((2, 1), np.float32)),  # one target per output
        (np.zeros((2, 3), np.float32), np.array([[0, np.inf], [0, 0]], np.float32)),
    ],
)
def test_bad_float_samples_are_refused_before_sending(x: np.ndarray, y: np.ndarray) -> None:
    m, dev = model(FLOAT_SPEC)
    with pytest.raises(McuInputError):
        m.load_samples(x, y)
    assert dev.loads == []


def test_float_samples_go_to_x_and_y_as_little_endian_float32() -> None:
    m, dev = model(FLOAT_SPEC)
    x = np.arange(6, dtype=np.float64).reshape(2, 3) - 2.5
    y = np.array([[0.5, -1.0], [2.0, 3.0]], np.float32)
    m.load_samples(x, y)
    assert dev.loads == [
        (TENSOR_X, x.astype("<f4").tobytes()),
        (TENSOR_Y, y.astype("<f4").tobytes()),
    ]
    with pytest.raises(McuInputError, match="regression"):
        m.predict(x)
    features = SetupSpec(
        Algo.LSGD,
        (3, 4, 2),
        capacity=4,
        activations=(Act.TANH, Act.SIGMOID),
        sample_format=SampleFormat.FLOAT_INPUTS,
    )
    fm, fdev = model(features)
    fm.load_samples(x.astype(np.float32), np.array([1, 0]))
    assert fdev.loads[-1] == (TENSOR_Y, bytes([1, 0]))
    with pytest.raises(McuInputError):
        fm.load_samples(x.astype(np.float32), np.array([[0.5], [1.0]], np.float32))


def test_float_formats_need_a_float_kernel_and_targets_need_mse() -> None:
    with pytest.raises(ProtocolError, match="float kernel"):
        SetupSpec(Algo.TIFED, (3, 2), capacity=2, sample_format=SampleFormat.FLOAT_INPUTS)
    with pytest.raises(ProtocolError, match="MSE"):
        SetupSpec(Algo.LSGD, (3, 2), capacity=2, sample_format=SampleFormat.FLOAT_TARGETS)
    assert setup_payload(FLOAT_SPEC)[-1] == 3
    plain = SetupSpec(Algo.LSGD, (3, 2), capacity=2, activations=(Act.SIGMOID,))
    assert len(setup_payload(plain)) == 10 + 2 * 2 + 1  # no format byte


def test_feedback_checks() -> None:
    m, dev = model()
    with pytest.raises(McuInputError):
        m.load_feedback([])
    with pytest.raises(McuInputError):
        m.load_feedback([np.zeros((4, 3), np.int32)])
    with pytest.raises(McuInputError):
        m.load_feedback([np.full((3, 4), 40000, np.int32)])
    assert dev.loads == []
    b = np.arange(12, dtype=np.int32).reshape(3, 4) - 6
    m.load_feedback([b])
    assert dev.loads == [(tensor_id(0, TensorKind.FEEDBACK), b.astype("<i2").tobytes())]


def test_q8_format_checks() -> None:
    m, _ = model()
    with pytest.raises(McuInputError):
        m.load_q8_format([7, 7], [7, 7])  # not a q8 model
    spec = SetupSpec(Algo.LSGD_Q8, (6, 4, 3), capacity=5, activations=(Act.TANH, Act.SIGMOID))
    qm, dev = model(spec)
    for wf, bf in (([7], [7]), ([15, 7], [7, 7]), ([2, 7], [10, 7])):
        with pytest.raises(McuInputError):
            qm.load_q8_format(wf, bf)
    assert dev.loads == []
    qm.load_q8_format([7, 6], [9, 8], seed=5, counter=10)
    assert qm.q8_counter() == 10


def test_param_dtypes() -> None:
    assert param_dtype(Algo.TIFED) == np.int32
    assert param_dtype(Algo.LSGD) == np.float32
    assert param_dtype(Algo.SGD) == np.float32
    assert param_dtype(Algo.LSGD_Q8) == np.int8


def test_public_surface() -> None:
    import eddl.mcu

    assert sorted(eddl.mcu.__all__) == sorted(
        [
            "Algo",
            "AsyncDevice",
            "Device",
            "DeviceError",
            "DeviceModel",
            "ErrorCode",
            "Hello",
            "LinkError",
            "McuError",
            "McuInputError",
            "MsgType",
            "ProtocolError",
            "SetupSpec",
            "Stats",
        ]
    )
    for name in eddl.mcu.__all__:
        assert getattr(eddl.mcu, name) is not None
