"""Training a model on a device: typed parameter upload/download, sample buffers, accuracy.

:class:`DeviceModel` wraps a :class:`~eddl.mcu.driver.Device` with one SETUP. It checks every
array on the host (names, shapes, dtypes, finiteness, pixel and label ranges) before anything is
sent, so bad input raises :class:`McuInputError` and the device is untouched. Samples are
uint8 pixels with class labels, or float32 features with class labels or float32 regression
targets, as the SETUP's :class:`~eddl.mcu.protocol.SampleFormat` says.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from .driver import Device
from .protocol import TENSOR_Q8STATE, TENSOR_X, TENSOR_Y, Algo, SetupSpec, TensorKind, tensor_id

__all__ = ["DeviceModel", "McuInputError", "param_dtype"]


class McuInputError(ValueError):
    """Arrays handed to the device do not fit the model (shape, dtype, range, NaN)."""


def param_dtype(algo: Algo) -> np.dtype[np.generic]:
    """Weight dtype per algorithm: TIFeD int32, L-SGD/SGD float32, L-SGD-q8 int8."""
    return np.dtype({Algo.TIFED: np.int32, Algo.LSGD_Q8: np.int8}.get(algo, np.float32))


def _finite_f32(a: np.ndarray) -> bool:
    """Every value finite once it is a float32 (a float64 beyond float32's range is not)."""
    with np.errstate(over="ignore"):
        return bool(np.isfinite(a.astype(np.float32)).all())


class DeviceModel:
    """One model allocated on a device by SETUP."""

    def __init__(self, device: Device, spec: SetupSpec) -> None:
        self.device = device
        self.spec = spec
        self.arena_used, self.arena_bytes = device.setup(spec)

    @property
    def num_layers(self) -> int:
        return len(self.spec.sizes) - 1

    def shapes(self) -> dict[str, tuple[int, ...]]:
        s = self.spec.sizes
        out: dict[str, tuple[int, ...]] = {}
        for i in range(self.num_layers):
            out[f"W{i}"] = (s[i], s[i + 1])
            out[f"b{i}"] = (s[i + 1],)
        return out

    def _tensor(self, name: str) -> int:
        kind = TensorKind.W if name[0] == "W" else TensorKind.B
        return tensor_id(int(name[1:]), kind)

    def load_params(self, params: Mapping[str, np.ndarray], *, subset: bool = False) -> None:
        """Upload parameters (all of them, or any subset with ``subset=True``)."""
        shapes = self.shapes()
        dtype = param_dtype(self.spec.algo)
        names = set(params)
        if names - set(shapes):
            raise McuInputError(f"unknown parameter(s) {sorted(names - set(shapes))}")
        if not subset and set(shapes) - names:
            raise McuInputError(f"missing parameter(s) {sorted(set(shapes) - names)}")
        for name, arr in params.items():
            if not isinstance(arr, np.ndarray) or arr.dtype != dtype:
                raise McuInputError(f"{name} must be a {dtype} array")
            if arr.shape != shapes[name]:
                raise McuInputError(f"{name} has shape {arr.shape}, expected {shapes[name]}")
            if dtype.kind == "f" and not np.isfinite(arr).all():
                raise McuInputError(f"{name} holds NaN or Inf")
        for name, arr in params.items():
            self.device.load(
                self._tensor(name), np.ascontiguousarray(arr).astype("<" + dtype.str[1:]).tobytes()
            )

    def read_params(self, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        shapes = self.shapes()
        dtype = param_dtype(self.spec.algo).newbyteorder("<")
        out: dict[str, np.ndarray] = {}
        for name in names or list(shapes):
            count = int(np.prod(shapes[name]))
            raw = self.device.read(self._tensor(name), count * dtype.itemsize)
            out[name] = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
            out[name] = out[name].reshape(shapes[name])
        return out

    def load_feedback(self, feedback: Sequence[npt.NDArray[np.integer]]) -> None:
        """TIFeD's fixed DFA matrices: one (classes x hidden) matrix of int16 range per hidden
        layer."""
        hidden = self.spec.sizes[1:-1]
        classes = self.spec.sizes[-1]
        if len(feedback) != len(hidden):
            raise McuInputError(f"need {len(hidden)} feedback matrices, got {len(feedback)}")
        for i, (h, b) in enumerate(zip(hidden, feedback, strict=True)):
            if not isinstance(b, np.ndarray) or b.dtype.kind not in "iu":
                raise McuInputError("feedback matrices must be integer arrays")
            if b.shape != (classes, h):
                raise McuInputError(f"feedback {i} has shape {b.shape}, expected {(classes, h)}")
            if b.size and (int(b.min()) < -32768 or int(b.max()) > 32767):
                raise McuInputError("feedback entries must fit int16")
            self.device.load(tensor_id(i, TensorKind.FEEDBACK), b.astype("<i2").tobytes())

    def load_q8_format(
        self,
        weight_frac: Sequence[int],
        bias_frac: Sequence[int],
        *,
        seed: int = 0,
        counter: int = 0,
    ) -> None:
        """lsgd-q8: per-layer fractional bits and the stochastic-rounding seed and counter."""
        if self.spec.algo != Algo.LSGD_Q8:
            raise McuInputError("only an lsgd-q8 model has a q8 format")
        if len(weight_frac) != self.num_layers or len(bias_frac) != self.num_layers:
            raise McuInputError(f"need {self.num_layers} weight and bias formats")
        for fw, fb in zip(weight_frac, bias_frac, strict=True):
            if not (0 <= fw <= 14 and 0 <= fb <= 14 and fb <= fw + 7):
                raise McuInputError(f"format fw={fw} fb={fb} outside 0..14 (fb <= fw + 7)")
        if not (0 <= seed <= 0xFFFFFFFF and 0 <= counter <= 0xFFFFFFFF):
            raise McuInputError("seed and counter must fit u32")
        for i, (fw, fb) in enumerate(zip(weight_frac, bias_frac, strict=True)):
            self.device.load(tensor_id(i, TensorKind.FORMAT), bytes([fw, fb]))
        self.device.load(TENSOR_Q8STATE, struct.pack("<II", seed, counter))

    def q8_counter(self) -> int:
        """Where the device's stochastic-rounding stream stands (advances per updated element)."""
        seed_counter = self.device.read(TENSOR_Q8STATE, 8)
        return int(struct.unpack("<II", seed_counter)[1])

    def load_samples(self, x: np.ndarray, y: np.ndarray | None = None) -> int:
        """Put samples (and their targets) at the start of the device's sample buffer: uint8
        pixel rows and class labels, or, as the SETUP's sample format says, float32 feature
        rows and float32 regression targets of shape ``(n, outputs)``. Everything is checked
        before the first byte is sent."""
        n = self._check_inputs(x)
        if y is not None:
            self._check_targets(y, n)
        if self.spec.float_inputs:
            self.device.load(TENSOR_X, np.ascontiguousarray(x, dtype="<f4").tobytes())
        else:
            self.device.load(TENSOR_X, x.astype(np.uint8).tobytes())
        if y is not None:
            dtype = "<f4" if self.spec.float_targets else np.uint8
            self.device.load(TENSOR_Y, np.ascontiguousarray(y, dtype=dtype).tobytes())
        return n

    def _check_inputs(self, x: np.ndarray) -> int:
        width = self.spec.sizes[0]
        floats = self.spec.float_inputs
        kinds, what = ("f", "float32 feature") if floats else ("iu", "integer (uint8 pixel)")
        if not isinstance(x, np.ndarray) or x.dtype.kind not in kinds or x.ndim != 2:
            raise McuInputError(f"samples must be a 2-D {what} array")
        n = int(x.shape[0])
        if x.shape[1] != width or not 1 <= n <= self.spec.capacity:
            raise McuInputError(
                f"samples have shape {x.shape}; need (1..{self.spec.capacity}, {width})"
            )
        if floats:
            if not _finite_f32(x):
                raise McuInputError("samples hold NaN or Inf (or values beyond float32)")
        elif x.min() < 0 or x.max() > 255:
            raise McuInputError("pixels must lie in 0..255")
        return n

    def _check_targets(self, y: np.ndarray, n: int) -> None:
        outputs = self.spec.sizes[-1]
        if self.spec.float_targets:
            if not isinstance(y, np.ndarray) or y.dtype.kind != "f" or y.shape != (n, outputs):
                raise McuInputError(f"targets must be a float array of shape ({n}, {outputs})")
            if not _finite_f32(y):
                raise McuInputError("targets hold NaN or Inf (or values beyond float32)")
            return
        if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.shape != (n,):
            raise McuInputError(f"labels must be an integer array of shape ({n},)")
        if y.min() < 0 or y.max() >= outputs:
            raise McuInputError(f"labels must lie in 0..{outputs - 1}")

    def predict(self, x: np.ndarray, *, timeout: float | None = None) -> npt.NDArray[np.int64]:
        """Labels predicted on the device, in buffer-sized chunks (classifiers only)."""
        if self.spec.float_targets:
            raise McuInputError("a regression model (float targets) predicts no labels")
        step = min(self.spec.capacity, self.device.max_payload)
        out = []
        for start in range(0, x.shape[0], step):
            part = x[start : start + step]
            self.load_samples(part)
            out.append(self.device.predict(part.shape[0], timeout=timeout))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def accuracy(self, x: np.ndarray, y: np.ndarray, *, timeout: float | None = None) -> float:
        return float(np.mean(self.predict(x, timeout=timeout) == y))
