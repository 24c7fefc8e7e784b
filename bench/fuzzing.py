"""A seeded corpus of hostile requests for every RPC of a leader (Cluster, Admin, Probe).

Two sources, half each, interleaved over the RPCs:

* **structured** — hypothesis strategies built from each request message's descriptor: every
  field unset or drawn from its whole wire range (integers up to 2^64 - 1 and their edges,
  NaN and infinities, long strings, nested messages, a few repeated entries), with the values
  that reach deeper mixed in (``Hints``: the real job id, a dataset, a dtype);
* **mutated** — a valid serialized request per RPC (``valid_requests``) with its bytes
  damaged: bits flipped, bytes inserted, deleted, duplicated or overwritten with varint
  extremes, cut short.

Client-streaming RPCs get one to four messages. Generation is seeded (``@seed`` for
hypothesis, ``random.Random`` for mutation): the same seed gives the same corpus.
"""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from eddl.proto.v1 import admin_pb2, cluster_pb2, common_pb2, probe_pb2

__all__ = [
    "FUZZ_JOB",
    "Call",
    "Hints",
    "Rpc",
    "corpus",
    "mutate",
    "rpcs",
    "structured",
    "valid_requests",
]


@dataclass(frozen=True, slots=True)
class Rpc:
    method: str  # "/eddl.v1.Cluster/Join"
    request: type[Message]
    client_streaming: bool
    server_streaming: bool

    @property
    def name(self) -> str:
        return self.method.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class Call:
    rpc: Rpc
    payloads: tuple[bytes, ...]  # one message, or a client stream
    origin: str  # "structured" or "mutated"


@dataclass(frozen=True, slots=True)
class Hints:
    """Values that get a request past its first checks (the fuzzer knows no token)."""

    job_id: str
    node_id: str = "fuzz-node"
    term: int = 1


def _rpc(method: MethodDescriptor) -> Rpc:
    return Rpc(
        f"/{method.containing_service.full_name}/{method.name}",
        GetMessageClass(method.input_type),
        method.client_streaming,
        method.server_streaming,
    )


def rpcs() -> list[Rpc]:
    """Every RPC a leader serves, health and reflection aside."""
    files = (cluster_pb2, admin_pb2, probe_pb2)
    services = [s for f in files for s in f.DESCRIPTOR.services_by_name.values()]
    return [_rpc(m) for s in services for m in s.methods]


# -- structured ------------------------------------------------------------------------------

_EDGES_U64 = [0, 1, 2**31 - 1, 2**32 - 1, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1]
_EDGES_I64 = [-(2**63), -(2**31), -1, 0, 1, 2**31 - 1, 2**63 - 1]
_MAX_DEPTH = 3
_MAX_REPEATED = 4


def _int_strategy(fd: FieldDescriptor) -> st.SearchStrategy[int]:
    bits = 32 if fd.type in _BITS32 else 64
    signed = fd.type in _SIGNED
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    edges = [v for v in (_EDGES_I64 if signed else _EDGES_U64) if lo <= v <= hi]
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi), st.integers(0, 64))


_BITS32 = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_SFIXED32,
}
_SIGNED = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
}
_INTS = {*_BITS32, *_SIGNED, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64}


def _string_strategy(fd: FieldDescriptor, hints: Hints) -> st.SearchStrategy[str]:
    known = {
        "job_id": [hints.job_id],
        "node_id": [hints.node_id],
        "dataset": ["digits", "mnist-10k", "../etc/passwd"],
        "dtype": ["float32", "int8", "int32", "float64", "object", "<f4"],
        "role": ["worker", "mcu", "gateway", "admin"],
        "spec_json": [json.dumps(FUZZ_JOB), "[" * 500 + "]" * 500, "{" * 3, '{"model": 1}'],
    }.get(fd.name, [])
    texts = st.one_of(
        st.text(max_size=24),
        st.sampled_from(["", "x" * 129, "x" * 600, "x" * 5000, "\x00", "é" * 300]),
    )
    return st.one_of(st.sampled_from(known), texts) if known else texts


def _scalar(fd: FieldDescriptor, hints: Hints) -> st.SearchStrategy[Any]:
    if fd.type in _INTS:
        return _int_strategy(fd)
    if fd.type == FieldDescriptor.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if fd.type == FieldDescriptor.TYPE_FLOAT:
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 12)  # proto3 enums are open: unknown numbers decode too
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    return _string_strategy(fd, hints)


def message_strategy(descriptor: Any, hints: Hints, depth: int = 0) -> st.SearchStrategy[Message]:
    cls = GetMessageClass(descriptor)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for fd in descriptor.fields:
        if fd.message_type is not None:
            if fd.message_type.GetOptions().map_entry or depth >= _MAX_DEPTH:
                continue  # maps and deeper messages stay unset
            value: st.SearchStrategy[Any] = message_strategy(fd.message_type, hints, depth + 1)
        else:
            value = _scalar(fd, hints)
        if fd.is_repeated:
            value = st.lists(value, max_size=_MAX_REPEATED)
        fields[fd.name] = st.none() | value
    return st.fixed_dictionaries(fields).map(lambda values: _build(cls, values))


def _build(cls: type[Message], values: dict[str, Any]) -> Message:
    message = cls()
    for name, value in values.items():
        if value is None:
            continue
        fd = cls.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name)
        if fd.is_repeated and fd.message_type is not None:
            for item in value:
                target.add().CopyFrom(item)
        elif fd.is_repeated:
            target.extend(value)
        elif fd.message_type is not None:
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def structured(rpc: Rpc, count: int, hints: Hints, seed_value: int) -> list[Call]:
    """Up to ``count`` calls of ``rpc`` drawn by hypothesis, seeded."""
    one = message_strategy(rpc.request.DESCRIPTOR, hints)
    strategy = st.lists(one, min_size=1, max_size=4) if rpc.client_streaming else one
    out: list[Call] = []

    @seed(seed_value)
    @settings(
        max_examples=count,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(strategy)
    def collect(drawn: Message | list[Message]) -> None:
        messages = drawn if isinstance(drawn, list) else [drawn]
        out.append(Call(rpc, tuple(m.SerializeToString() for m in messages), "structured"))

    collect()
    return out[:count]


# -- mutated ---------------------------------------------------------------------------------

FUZZ_JOB: dict[str, Any] = {
    "dataset": "digits",
    "algorithm": "sgd",
    "model": {"sizes": [64, 16, 10], "activations": ["tanh", "sigmoid"], "loss": "bce"},
    "hyper": {"lr": 0.2, "batch_size": 8},
    "max_epochs": 2.0,
    "rounds": 1000,
}


def valid_requests(hints: Hints) -> dict[str, list[Message]]:
    """One well-formed request (or client stream) per RPC, keyed by method name."""
    env = common_pb2.Envelope(job_id=hints.job_id, node_id=hints.node_id, term=hints.term)
    data = bytes(16)
    chunk = cluster_pb2.TensorChunk(
        index=0, name="w0", dtype="float32", shape=[4], total_bytes=16, data=data,
        crc32=zlib.crc32(data),
    )  # fmt: skip
    header = cluster_pb2.UpdateHeader(
        envelope=env, task_id="t-1", num_samples=8, num_tensors=1, total_bytes=16
    )
    info = cluster_pb2.NodeInfo(hostname="h", cpu_count=2, datasets=["digits"])
    spec = json.dumps(FUZZ_JOB)
    return {
        "Join": [cluster_pb2.JoinRequest(envelope=env, role="worker", join_token="no", info=info)],
        "Heartbeat": [cluster_pb2.HeartbeatRequest(envelope=env)],
        "GetTask": [cluster_pb2.GetTaskRequest(envelope=env, wait_ms=0)],
        "PushUpdate": [
            cluster_pb2.UpdateChunk(header=header),
            cluster_pb2.UpdateChunk(chunk=chunk),
        ],
        "PullModel": [cluster_pb2.PullModelRequest(envelope=env, latest=True)],
        "FetchSamples": [
            cluster_pb2.FetchSamplesRequest(envelope=env, dataset="digits", indexes=[0, 1, 2])
        ],
        "Leave": [cluster_pb2.LeaveRequest(envelope=env, reason="bye")],
        "SubmitJob": [admin_pb2.SubmitJobRequest(spec_json=spec, admin_token="no")],
        "JobStatus": [admin_pb2.JobStatusRequest(job_id=hints.job_id)],
        "WatchJob": [admin_pb2.WatchJobRequest(job_id=hints.job_id)],
        "ListNodes": [admin_pb2.ListNodesRequest()],
        "CancelJob": [admin_pb2.CancelJobRequest(job_id=hints.job_id, admin_token="no")],
        "Ping": [probe_pb2.PingRequest(payload=b"x" * 16, reply_bytes=16)],
        "Upload": [probe_pb2.ProbeChunk(payload=b"x" * 64)] * 2,
        "Download": [probe_pb2.DownloadRequest(total_bytes=1024, chunk_bytes=512)],
    }


_VARINTS = [b"\xff" * 9 + b"\x01", b"\x80" * 10, b"\xff\xff\xff\xff\x0f", b"\x00"]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """``data`` with one to three random damages."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(6)
        at = rng.randrange(len(out) + 1)
        if kind == 0 and out:
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        elif kind == 1:
            out[at:at] = rng.randbytes(rng.randint(1, 8))
        elif kind == 2 and out:
            del out[at : at + rng.randint(1, 8)]
        elif kind == 3 and out:
            start = rng.randrange(len(out))
            out[at:at] = out[start : start + rng.randint(1, 16)]
        elif kind == 4:
            out[at : at + rng.randint(0, 4)] = rng.choice(_VARINTS)
        else:
            out = out[: rng.randrange(len(out) + 1)]
    return bytes(out)


def mutated(rpc: Rpc, count: int, hints: Hints, rng: random.Random) -> list[Call]:
    valid = [m.SerializeToString() for m in valid_requests(hints)[rpc.name]]
    calls = []
    for _ in range(count):
        payloads = list(valid)
        i = rng.randrange(len(payloads))
        payloads[i] = mutate(payloads[i], rng)
        calls.append(Call(rpc, tuple(payloads), "mutated"))
    return calls


def corpus(count: int, hints: Hints, seed_value: int = 0) -> list[Call]:
    """About ``count`` calls over every RPC, half structured and half mutated, shuffled."""
    targets = rpcs()
    per = max(1, count // (2 * len(targets)))
    rng = random.Random(seed_value)
    calls: list[Call] = []
    for i, rpc in enumerate(targets):
        calls += structured(rpc, per, hints, seed_value + i)
        calls += mutated(rpc, per, hints, rng)
    # Small messages like ListNodesRequest have few distinct forms: top up with mutations.
    while len(calls) < count:
        calls += mutated(targets[len(calls) % len(targets)], 1, hints, rng)
    rng.shuffle(calls)
    return calls[:count]


def by_method(calls: Sequence[Call]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in calls:
        counts[call.rpc.name] = counts.get(call.rpc.name, 0) + 1
    return counts
