"""``eddl.net.bounds.check_message``: each kind of field bound, on real request messages."""

from __future__ import annotations

import pytest

from eddl.net.bounds import MAX_SQL_INT, BoundsError, MessageBounds, check_message
from eddl.proto.v1 import admin_pb2, cluster_pb2, common_pb2


def test_valid_requests_pass() -> None:
    check_message(admin_pb2.WatchJobRequest(job_id="job-1", after_seq=MAX_SQL_INT))
    check_message(
        cluster_pb2.FetchSamplesRequest(
            envelope=common_pb2.Envelope(node_id="n" * 128, model_version=7),
            dataset="digits",
            indexes=list(range(65536)),
        )
    )
    check_message(admin_pb2.SubmitJobRequest(spec_json="x" * 64 * 1024, admin_token="t" * 512))


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (admin_pb2.WatchJobRequest(after_seq=2**63), "after_seq"),
        (
            cluster_pb2.PullModelRequest(envelope=common_pb2.Envelope(model_version=2**64 - 1)),
            "envelope.model_version",
        ),
        (admin_pb2.JobStatusRequest(job_id="j" * 129), "job_id"),
        (cluster_pb2.JoinRequest(join_token="t" * 513), "join_token"),
        (admin_pb2.SubmitJobRequest(spec_json="x" * (64 * 1024 + 1)), "spec_json"),
        (cluster_pb2.FetchSamplesRequest(dataset="d" * 1025), "dataset"),
        (cluster_pb2.FetchSamplesRequest(indexes=[0] * 65537), "indexes"),
        (
            cluster_pb2.HeartbeatRequest(load=cluster_pb2.NodeLoad(cpu_percent=float("nan"))),
            "load.cpu_percent",
        ),
    ],
)
def test_each_bound_names_its_field(message: object, field: str) -> None:
    with pytest.raises(BoundsError, match=field.replace(".", r"\.")):
        check_message(message)  # type: ignore[arg-type]


def test_limits_are_configurable() -> None:
    tight = MessageBounds(max_int=10, max_id_chars=4)
    with pytest.raises(BoundsError):
        check_message(admin_pb2.WatchJobRequest(after_seq=11), tight)
    with pytest.raises(BoundsError):
        check_message(admin_pb2.JobStatusRequest(job_id="abcde"), tight)
    assert issubclass(BoundsError, ValueError)  # maps to INVALID_ARGUMENT
