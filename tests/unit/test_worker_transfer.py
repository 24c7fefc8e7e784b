"""The worker's tensor streams: a model carried inline in a GetTask reply."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from eddl.net import ChunkError, ChunkTooLargeError, encode_tensors, params_nbytes
from eddl.proto.v1 import cluster_pb2, common_pb2
from eddl.worker.config import WorkerConfig
from eddl.worker.tasks import task_from_proto
from eddl.worker.transfer import Transfers, inline_model


def _params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "W0": rng.standard_normal((64, 32)).astype(np.float32),
        "b0": rng.standard_normal(32).astype(np.float32),
    }


def _reply(params: dict[str, np.ndarray], version: int = 7) -> cluster_pb2.GetTaskReply:
    reply = cluster_pb2.GetTaskReply(task=cluster_pb2.Task(task_id="job:1"))
    reply.model_header.CopyFrom(
        cluster_pb2.ModelHeader(
            envelope=common_pb2.Envelope(job_id="job", model_version=version),
            num_tensors=len(params),
            total_bytes=params_nbytes(params),
        )
    )
    reply.model_chunks.extend(encode_tensors(params, 1024))
    return reply


def test_an_inline_model_is_reassembled_exactly_with_its_version() -> None:
    params = _params()
    got = inline_model(_reply(params), max_bytes=1 << 20)
    assert got is not None
    version, arrays = got
    assert version == 7 and list(arrays) == ["W0", "b0"]
    for name, array in params.items():
        assert arrays[name].dtype == array.dtype and np.array_equal(arrays[name], array)


def test_a_reply_without_a_model_holds_none() -> None:
    reply = cluster_pb2.GetTaskReply(task=cluster_pb2.Task(task_id="job:1"))
    assert inline_model(reply, max_bytes=1 << 20) is None


def test_a_corrupt_truncated_or_oversized_inline_model_is_refused() -> None:
    params = _params()
    corrupt = _reply(params)
    corrupt.model_chunks[0].data = b"\0" * len(corrupt.model_chunks[0].data)
    with pytest.raises(ChunkError, match=r"(?i)crc|checksum"):
        inline_model(corrupt, max_bytes=1 << 20)
    truncated = _reply(params)
    del truncated.model_chunks[-1]
    with pytest.raises(ChunkError):
        inline_model(truncated, max_bytes=1 << 20)
    with pytest.raises(ChunkTooLargeError):
        inline_model(_reply(params), max_bytes=params_nbytes(params) - 1)


class _Session:
    """What :class:`Transfers` reads of its session: the config and the leader's address."""

    def __init__(self) -> None:
        self.config = WorkerConfig(leaders=["leader:1"], node_id="w0", join_token="t")
        self.link = SimpleNamespace(address="leader:1")


@pytest.mark.parametrize(
    ("call_s", "held_ms", "estimated"),
    [(0.5, 300, True), (0.5, 0, True), (0.5, 500, False), (0.5, 4_000_000, False)],
)
def test_an_inline_model_times_the_download_less_the_time_the_leader_held_the_call(
    call_s: float, held_ms: int, estimated: bool
) -> None:
    transfers = Transfers(_Session())  # type: ignore[arg-type]
    reply = _reply(_params())
    reply.task.envelope.CopyFrom(common_pb2.Envelope(job_id="job", model_version=7))
    reply.held_ms = held_ms
    transfers.keep_inline(task_from_proto(reply.task), reply, call_s)
    assert transfers.model is not None and transfers.model[1] == 7  # kept either way
    links = transfers.links.estimates(time.time())
    if not estimated:  # a held time the call cannot contain is not believed
        assert links == []
        return
    (link,) = links
    rate = link.download_bytes_per_second
    assert rate == pytest.approx(reply.ByteSize() / (call_s - held_ms / 1000.0))
