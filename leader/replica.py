"""What the root replicates to its standbys, as bytes: jobs and committed write batches.

A payload is a list of ops:

* :class:`JobOp` - a job as the root stores it (spec, status, result): created if absent;
* a :class:`~eddl.leader.checkpoint.WriteBatch` - versions (the model and, in its meta, the
  ledger and everything a run resumes from), job statuses, events, members;
* :class:`PkiOp` - the cluster CA's ledger (issued and revoked serials, join tokens and their
  remaining uses), which a standby merges into its own (:mod:`eddl.security.ledger`).

:func:`snapshot` gathers a store's whole resumable state (every job, the newest version of
each, its events, the members) for a standby that is behind. :func:`apply` merges a payload
into a standby's store idempotently: versions and events it already holds are skipped, so a
payload sent twice (a retried stream) or a snapshot over a partial copy changes nothing twice.

Wire form: 4 bytes of header length, a JSON header, then the tensors' raw bytes, which the
header locates. :func:`decode` checks every length and offset (:class:`ReplicaError`).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from eddl.leader.checkpoint import (
    CheckpointStore,
    JobStatusChange,
    MemberRecord,
    VersionRecord,
    WriteBatch,
)
from eddl.leader.events import Event
from eddl.security.ledger import Ledger

__all__ = [
    "JobOp",
    "Op",
    "PkiOp",
    "ReplicaError",
    "apply",
    "decode",
    "encode",
    "newest_version",
    "snapshot",
]

MAX_HEADER = 64 * 1024 * 1024


class ReplicaError(ValueError):
    """A replicated payload that cannot be decoded or applied."""


@dataclass(frozen=True)
class JobOp:
    job_id: str
    spec: Mapping[str, Any]
    status: str
    created_at: float
    updated_at: float
    result: Mapping[str, Any]


@dataclass(frozen=True)
class PkiOp:
    ledger: Ledger


Op = JobOp | WriteBatch | PkiOp


def newest_version(ops: Sequence[Op]) -> int:
    return max(
        (v.version for op in ops if isinstance(op, WriteBatch) for v in op.versions), default=0
    )


def snapshot(store: CheckpointStore) -> list[Op]:
    """Everything a standby needs to resume the root's jobs."""
    ops: list[Op] = []
    for job in store.jobs():
        ops.append(
            JobOp(job.job_id, job.spec, job.status, job.created_at, job.updated_at, job.result)
        )
        latest = store.latest_version(job.job_id)
        ops.append(
            WriteBatch(
                versions=[latest] if latest is not None else [],
                events=store.events(job.job_id),
            )
        )
    ops.append(WriteBatch(members=store.members()))
    return ops


def apply(store: CheckpointStore, ops: Sequence[Op]) -> None:
    """Merge ``ops`` into ``store``; what it already holds is skipped. A :class:`PkiOp` is
    not the store's: the standby hands it to its authority."""
    for op in ops:
        if isinstance(op, PkiOp):
            continue
        if isinstance(op, JobOp):
            known = store.job(op.job_id)
            if known is None:
                store.add_job(op.job_id, op.spec, op.status, op.created_at)
            if known is None or known.status != op.status or known.result != op.result:
                store.set_job_status(op.job_id, op.status, op.updated_at, op.result)
            continue
        latest: dict[str, int] = {}
        versions = []
        for rec in op.versions:
            if rec.job_id not in latest:
                have = store.versions(rec.job_id)
                latest[rec.job_id] = have[-1] if have else -1
            if rec.version > latest[rec.job_id]:
                versions.append(rec)
                latest[rec.job_id] = rec.version
        seqs: dict[str, int] = {}
        events = []
        for event in op.events:
            if event.job_id not in seqs:
                seqs[event.job_id] = store.last_event_seq(event.job_id)
            if event.seq > seqs[event.job_id]:
                events.append(event)
                seqs[event.job_id] = event.seq
        store.commit(
            WriteBatch(
                statuses=op.statuses,
                versions=versions,
                prunes=op.prunes,
                events=events,
                members=op.members,
                forget_members=op.forget_members,
            )
        )


# -- wire form ---------------------------------------------------------------------------------
def encode(ops: Sequence[Op]) -> bytes:
    blobs: list[bytes] = []
    offset = 0

    def tensor(name: str, arr: np.ndarray) -> dict[str, Any]:
        nonlocal offset
        data = np.ascontiguousarray(arr).tobytes()
        blobs.append(data)
        entry = {"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape),
                 "offset": offset, "size": len(data)}  # fmt: skip
        offset += len(data)
        return entry

    header: list[dict[str, Any]] = []
    for op in ops:
        if isinstance(op, JobOp):
            header.append({"op": "job", **asdict(op)})
            continue
        if isinstance(op, PkiOp):
            header.append({"op": "pki", **op.ledger.to_dict()})
            continue
        header.append(
            {
                "op": "batch",
                "statuses": [asdict(s) for s in op.statuses],
                "versions": [
                    {
                        "job_id": v.job_id,
                        "version": v.version,
                        "meta": dict(v.meta),
                        "saved_at": v.saved_at,
                        "tensors": [tensor(n, a) for n, a in v.params.items()],
                    }
                    for v in op.versions
                ],
                "prunes": [list(p) for p in op.prunes],
                "events": [e.to_dict() for e in op.events],
                "members": [asdict(m) for m in op.members],
                "forget_members": list(op.forget_members),
            }
        )
    head = json.dumps(header, sort_keys=True, allow_nan=False).encode()
    return struct.pack(">I", len(head)) + head + b"".join(blobs)


def decode(payload: bytes) -> list[Op]:
    if len(payload) < 4:
        raise ReplicaError("replica payload shorter than its header length")
    (size,) = struct.unpack(">I", payload[:4])
    if size > MAX_HEADER or 4 + size > len(payload):
        raise ReplicaError(f"replica header of {size} bytes does not fit the payload")
    blob = memoryview(payload)[4 + size :]
    try:
        header = json.loads(payload[4 : 4 + size])
        if not isinstance(header, list):
            raise ReplicaError("replica header is not a list of ops")
        return [_op(raw, blob) for raw in header]
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ReplicaError):
            raise
        raise ReplicaError(f"malformed replica op: {exc!r}") from exc


def _op(raw: dict[str, Any], blob: memoryview) -> Op:
    kind = raw["op"]
    if kind == "job":
        return JobOp(str(raw["job_id"]), dict(raw["spec"]), str(raw["status"]),
                     float(raw["created_at"]), float(raw["updated_at"]),
                     dict(raw["result"]))  # fmt: skip
    if kind == "pki":
        return PkiOp(Ledger.from_dict(raw))
    if kind != "batch":
        raise ReplicaError(f"unknown replica op {kind!r}")
    return WriteBatch(
        statuses=[JobStatusChange(**s) for s in raw["statuses"]],
        versions=[_version(v, blob) for v in raw["versions"]],
        prunes=[(str(j), int(k)) for j, k in raw["prunes"]],
        events=[Event.from_dict(e) for e in raw["events"]],
        members=[MemberRecord(**m) for m in raw["members"]],
        forget_members=[str(n) for n in raw["forget_members"]],
    )


def _version(raw: dict[str, Any], blob: memoryview) -> VersionRecord:
    params: dict[str, np.ndarray] = {}
    for t in raw["tensors"]:
        start, size = int(t["offset"]), int(t["size"])
        if start < 0 or size < 0 or start + size > len(blob):
            raise ReplicaError(f"tensor {t['name']!r} lies outside the payload")
        dtype = np.dtype(str(t["dtype"]))
        shape = tuple(int(n) for n in t["shape"])
        if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != size:
            raise ReplicaError(f"tensor {t['name']!r}: {size} bytes do not fill shape {shape}")
        params[str(t["name"])] = (
            np.frombuffer(blob[start : start + size], dtype).reshape(shape).copy()
        )
    return VersionRecord(
        str(raw["job_id"]), int(raw["version"]), params, dict(raw["meta"]), float(raw["saved_at"])
    )
