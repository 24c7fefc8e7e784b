"""Top-P selection on a device: the update ``φ − θ`` of the shared layers, as sparse records.

A model set up with ``SetupSpec(shared_layers=k)`` keeps a copy ``θ`` of layers ``0..k-1``
(``firmware/src/topp.c``). :func:`snapshot` takes it (after the meta-model is loaded, before
TRAIN); :func:`select` has the device pick the ``k`` entries of largest ``|φ − θ|`` across the
shared tensors, with :func:`eddl.learn.topp.top_p`'s order (one threshold, ties by position);
:func:`read_selected` streams each tensor's kept entries as ``(flat index u32, value)`` records
in increasing index order, the layout of :class:`eddl.net.sparse.SparseRecord`.

Values are float32 for the float kernels; lsgd-q8 sends the integer difference of the int8
weights, and the host scales it by the tensor's ``2^-f`` (exact in float32).
:func:`read_selected_int8` reads the same entries quantised on the device, int8 values and one
scale per tensor (``eddl.net.sparse``'s encoding, bit for bit), and returns them as the wire's
:class:`~eddl.proto.v1.common_pb2.SparseTensor` records, to be forwarded as they are;
:func:`int8_record` checks a device's reply (count within the tensor and the selection,
indexes strictly increasing inside it, one finite scale) before it becomes a record.

Wire layout of ``MsgType.TOPP`` (first byte: the sub-command):

========= ============================================= =========================================
op        request                                       reply
========= ============================================= =========================================
0 snapshot (nothing)                                    entries u32 (shared entries in all)
1 select  k u32                                         k u32, entries u32, threshold key u32,
                                                        ties u32, kept u32 x (2 x shared layers)
2 read    tensor u8, first u32, at most u16             n x (index u32, value f32 / i32)
3 read8   tensor u8, first u32, at most u16             scale f32, n x (index u32, value i8)
========= ============================================= =========================================
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from eddl.learn.topp import SparseDelta, kept_entries
from eddl.net.sparse import SparseRecordError, decode_sparse
from eddl.proto.v1 import common_pb2

from .driver import Device
from .protocol import Algo, MsgType, ProtocolError, SetupSpec, TensorKind, tensor_id

__all__ = [
    "INT8_RECORD_BYTES",
    "RECORD_BYTES",
    "Selection",
    "device_top_p",
    "device_top_p_int8",
    "int8_record",
    "read_selected",
    "read_selected_int8",
    "select",
    "shared_entries",
    "snapshot",
]

RECORD_BYTES = 8
INT8_HEAD_BYTES, INT8_RECORD_BYTES = 4, 5
OP_SNAPSHOT, OP_SELECT, OP_READ, OP_READ_INT8 = 0, 1, 2, 3


@dataclass(frozen=True)
class Selection:
    """What the device selected: ``k`` of ``entries``, and how many per shared tensor."""

    k: int
    entries: int
    threshold_key: int
    ties: int
    kept: dict[str, int]


def _shared_names(spec: SetupSpec) -> list[str]:
    return [f"{k}{i}" for i in range(spec.shared_layers) for k in ("W", "b")]


def snapshot(device: Device) -> int:
    """Copy the shared layers to ``θ`` on the device; returns how many entries they hold."""
    (entries,) = struct.unpack("<I", device.request(MsgType.TOPP, bytes([OP_SNAPSHOT])))
    return int(entries)


def select(device: Device, spec: SetupSpec, k: int) -> Selection:
    """Have the device keep the ``k`` largest ``|φ − θ|`` entries of the shared layers."""
    if not 1 <= k <= 0xFFFFFFFF:
        raise ProtocolError(f"k must be in 1..2^32-1, got {k}")
    body = device.request(MsgType.TOPP, struct.pack("<BI", OP_SELECT, k))
    names = _shared_names(spec)
    if len(body) != 16 + 4 * len(names):
        raise ProtocolError(f"TOPP select reply of {len(body)} bytes for {len(names)} tensors")
    got, entries, threshold, ties = struct.unpack_from("<IIII", body)
    kept = struct.unpack_from(f"<{len(names)}I", body, 16)
    if got != k or sum(kept) != k:
        raise ProtocolError(f"the device kept {sum(kept)} entries, asked {k}")
    return Selection(k, entries, threshold, ties, dict(zip(names, kept, strict=True)))


def read_selected(
    device: Device,
    spec: SetupSpec,
    selection: Selection,
    *,
    weight_frac: Sequence[int] = (),
    bias_frac: Sequence[int] = (),
) -> dict[str, SparseDelta]:
    """The kept entries of every shared tensor, as float32 :class:`SparseDelta` records
    (lsgd-q8 needs the model's fractional bits to scale its integer differences)."""
    q8 = spec.algo == Algo.LSGD_Q8
    if q8 and (len(weight_frac) < spec.shared_layers or len(bias_frac) < spec.shared_layers):
        raise ProtocolError("lsgd-q8 records need the weight and bias formats of every layer")
    per_frame = max(1, min(0xFFFF, device.max_payload // RECORD_BYTES))
    out: dict[str, SparseDelta] = {}
    for name, count in selection.kept.items():
        layer = int(name[1:])
        kind = TensorKind.W if name[0] == "W" else TensorKind.B
        shape = (
            (spec.sizes[layer], spec.sizes[layer + 1])
            if kind == TensorKind.W
            else (spec.sizes[layer + 1],)
        )
        size = int(np.prod(shape))
        chunks = []
        for first in range(0, count, per_frame):
            want = min(per_frame, count - first)
            request = struct.pack("<BBIH", OP_READ, tensor_id(layer, kind), first, want)
            body = device.request(MsgType.TOPP, request)
            if len(body) != want * RECORD_BYTES:
                raise ProtocolError(f"{name}: {len(body) // RECORD_BYTES} records, asked {want}")
            chunks.append(body)
        raw = b"".join(chunks)
        rec = np.frombuffer(raw, dtype=[("i", "<u4"), ("v", "<f4" if not q8 else "<i4")])
        idx = rec["i"].astype(np.int64)
        if q8:
            frac = weight_frac[layer] if kind == TensorKind.W else bias_frac[layer]
            values = (rec["v"].astype(np.float32) * np.float32(2.0**-frac)).astype(np.float32)
        else:
            values = rec["v"].astype(np.float32)
        if idx.size and (int(idx[-1]) >= size or np.any(np.diff(idx) <= 0)):
            raise ProtocolError(f"{name}: record indexes not increasing inside {size} entries")
        out[name] = SparseDelta(shape, idx, values)
    return out


def shared_entries(spec: SetupSpec) -> int:
    """How many entries the shared layers hold (ProtocolError when there are none)."""
    entries = sum(
        spec.sizes[i] * spec.sizes[i + 1] + spec.sizes[i + 1] for i in range(spec.shared_layers)
    )
    if entries == 0:
        raise ProtocolError("the model has no shared layers (SetupSpec.shared_layers)")
    return entries


def _shape(spec: SetupSpec, name: str) -> tuple[int, ...]:
    layer = int(name[1:])
    if name[0] == "W":
        return (spec.sizes[layer], spec.sizes[layer + 1])
    return (spec.sizes[layer + 1],)


def int8_record(
    name: str, shape: tuple[int, ...], count: int, replies: Sequence[bytes]
) -> common_pb2.SparseTensor:
    """The wire record of one tensor from the device's TOPP read8 replies: ``count`` entries
    in all, every reply led by the same finite scale > 0. A reply that breaks any of that, an
    index outside the tensor or not above the one before (a duplicate) is refused with
    :class:`ProtocolError`; nothing is built from it."""
    size = int(np.prod(shape))
    if not 0 <= count <= size:
        raise ProtocolError(f"{name}: {count} entries kept of a tensor of {size}")
    scales = set()
    parts = []
    for body in replies:
        if len(body) < INT8_HEAD_BYTES or (len(body) - INT8_HEAD_BYTES) % INT8_RECORD_BYTES:
            raise ProtocolError(f"{name}: a TOPP read8 reply of {len(body)} bytes")
        scales.add(body[:INT8_HEAD_BYTES])
        parts.append(body[INT8_HEAD_BYTES:])
    raw = b"".join(parts)
    if len(raw) != count * INT8_RECORD_BYTES or len(scales) > 1:
        raise ProtocolError(
            f"{name}: {len(raw) // INT8_RECORD_BYTES} records under {len(scales)} scales, "
            f"the selection kept {count} under one"
        )
    scale = float(np.frombuffer(scales.pop(), "<f4")[0]) if scales else 1.0
    rec = np.frombuffer(raw, dtype=[("i", "<u4"), ("q", "i1")])
    idx = rec["i"].astype(np.int64)
    if idx.size and (int(idx[-1]) >= size or np.any(np.diff(idx) <= 0)):
        raise ProtocolError(f"{name}: record indexes not strictly increasing inside {size}")
    msg = common_pb2.SparseTensor(
        name=name, shape=list(shape), count=count, value_dtype="int8", scale=scale
    )
    msg.index_gaps.extend(np.diff(idx, prepend=0).astype(np.uint32).tolist())
    msg.values = rec["q"].tobytes()
    try:
        decode_sparse(msg, expected_shape=shape, max_entries=count)
    except SparseRecordError as exc:
        raise ProtocolError(str(exc)) from exc
    return msg


def read_selected_int8(
    device: Device, spec: SetupSpec, selection: Selection
) -> dict[str, common_pb2.SparseTensor]:
    """The kept entries of every shared tensor, quantised on the device, as int8 records."""
    per_frame = max(1, min(0xFFFF, (device.max_payload - INT8_HEAD_BYTES) // INT8_RECORD_BYTES))
    out: dict[str, common_pb2.SparseTensor] = {}
    for name, count in selection.kept.items():
        kind = TensorKind.W if name[0] == "W" else TensorKind.B
        replies = []
        for first in range(0, max(count, 1), per_frame):
            want = min(per_frame, max(count - first, 1))
            tensor = tensor_id(int(name[1:]), kind)
            request = struct.pack("<BBIH", OP_READ_INT8, tensor, first, want)
            replies.append(device.request(MsgType.TOPP, request))
        out[name] = int8_record(name, _shape(spec, name), count, replies)
    return out


def device_top_p(
    device: Device,
    spec: SetupSpec,
    p: float,
    *,
    weight_frac: Sequence[int] = (),
    bias_frac: Sequence[int] = (),
) -> dict[str, SparseDelta]:
    """Select the top ``p`` percent on the device (``eddl.learn.topp.kept_entries`` of the
    shared entries) and read the records back."""
    sel = select(device, spec, kept_entries(shared_entries(spec), p))
    return read_selected(device, spec, sel, weight_frac=weight_frac, bias_frac=bias_frac)


def device_top_p_int8(device: Device, spec: SetupSpec, p: float) -> list[common_pb2.SparseTensor]:
    """:func:`device_top_p` with the values quantised on the device: its int8 wire records."""
    sel = select(device, spec, kept_entries(shared_entries(spec), p))
    return list(read_selected_int8(device, spec, sel).values())
