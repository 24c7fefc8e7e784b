"""eddl.cli.progress: what the live view of ``eddl local`` makes of the leader's replies."""

from __future__ import annotations

import io
import json

from eddl.cli.progress import LineView, Progress, SilentView, make_view
from eddl.proto.v1 import admin_pb2, common_pb2


def _nodes(*rows: tuple[str, str, float, str, int]) -> admin_pb2.ListNodesReply:
    return admin_pb2.ListNodesReply(
        nodes=[
            admin_pb2.NodeStatus(
                node_id=node_id,
                role="worker",
                state=state,
                samples_per_second=sps,
                current_task=task,
                tasks_done=done,
            )
            for node_id, state, sps, task, done in rows
        ]
    )


def _status(version: int, samples: int = 0, state: str = "running") -> admin_pb2.JobStatusReply:
    return admin_pb2.JobStatusReply(
        envelope=common_pb2.Envelope(job_id="job-1", model_version=version),
        state=state,
        accuracy=0.5,
        policy="sync",
        policy_reason="start synchronous",
        samples_trained=samples,
    )


def _event(kind: str, version: int = 0, **data: object) -> admin_pb2.JobEvent:
    return admin_pb2.JobEvent(
        job_id="job-1",
        kind=kind,
        model_version=version,
        message=f"{kind} happened",
        data_json=json.dumps(data),
    )


def test_joins_departures_and_returns_come_from_the_node_table() -> None:
    progress = Progress()
    assert progress.update_nodes(_nodes(("w0", "alive", 0, "", 0))) == ["worker w0 joined"]
    lines = progress.update_nodes(_nodes(("w0", "alive", 0, "", 0), ("w1", "alive", 0, "", 0)))
    assert lines == ["worker w1 joined"]
    gone = _nodes(("w0", "gone (expired)", 0, "", 0), ("w1", "alive", 0, "", 0))
    assert progress.update_nodes(gone) == ["w0 gone (expired)"]
    assert progress.update_nodes(gone) == []
    assert progress.update_nodes(_nodes(("w0", "alive", 0, "", 0))) == ["w0 is back"]


def test_tasks_are_the_leaders_count_else_a_lower_bound_from_tasks_seen() -> None:
    progress = Progress()
    progress.update_nodes(_nodes(("w0", "alive", 120.0, "t1", 0), ("w1", "alive", 0, "", 4)))
    progress.update_nodes(_nodes(("w0", "alive", 0.0, "t2", 0), ("w1", "alive", 0, "", 4)))
    rows = {row[0]: row for row in progress.node_rows()}
    # w0: two distinct tasks seen, no count from the leader; the last speed estimate is kept
    # once the leader stops estimating (a job ended).
    assert rows["w0"][3:] == ("120", "t2", ">=2")
    assert rows["w1"][3:] == ("-", "-", "4")


def test_samples_per_second_from_deltas_of_the_samples_trained() -> None:
    progress = Progress()
    progress.update_status(_status(1, samples=0), now=10.0)
    assert progress.samples_per_second == 0.0
    progress.update_status(_status(2, samples=500), now=11.0)
    progress.update_status(_status(3, samples=1500), now=12.0)
    assert progress.samples_per_second == 750.0
    # Over the last 3 s once there are points that old: a pause long ago no longer counts.
    for i, at in enumerate((20.0, 21.0, 22.0, 23.0)):
        progress.update_status(_status(4 + i, samples=1500 + 200 * i), now=at)
    assert progress.samples_per_second == 200.0


def test_model_updates_count_samples_where_the_leader_reports_none() -> None:
    progress = Progress()
    assert progress.on_event(_event("model_updated", 1, samples=300)) is None
    assert progress.on_event(_event("model_updated", 2, samples=200)) is None
    progress.update_status(_status(2, samples=0, state="completed"), now=1.0)
    assert progress.samples == 500
    assert "500 samples trained" in progress.headline()


def test_only_notable_events_make_a_line() -> None:
    progress = Progress()
    assert progress.on_event(_event("round_closed", 3)) is None
    assert progress.on_event(_event("node_joined", 3)) is None  # the node table reports it
    line = progress.on_event(_event("policy_switched", 4))
    assert line == "v4 policy_switched: policy_switched happened"


def test_line_view_prints_a_progress_line_per_new_version_not_per_poll() -> None:
    out = io.StringIO()
    view = LineView(out, every_s=0.0)
    progress = Progress(job_id="job-1")
    view.note("worker w0 joined")
    for version in (1, 1, 1, 2):
        progress.update_status(_status(version), now=float(version))
        view.refresh(progress)
    progress.update_nodes(_nodes(("w0", "alive", 10.0, "t1", 1)))
    progress.update_status(_status(2, state="completed"), now=3.0)
    view.close(progress)
    lines = out.getvalue().splitlines()
    assert lines[0] == "  * worker w0 joined"
    assert [line for line in lines if "version" in line] == [
        "  job job-1 running  version 1  accuracy 50.00%  policy sync  0 samples/s",
        "  job job-1 running  version 2  accuracy 50.00%  policy sync  0 samples/s",
        "  job job-1 completed  version 2  accuracy 50.00%  policy sync  0 samples trained",
    ]
    assert lines[-2].split() == ["node", "role", "state", "samples/s", "task", "tasks"]
    assert lines[-1].split() == ["w0", "worker", "alive", "10", "t1", "1"]


def test_make_view_is_silent_for_json_and_plain_lines_off_a_terminal() -> None:
    assert isinstance(make_view(True, io.StringIO()), SilentView)
    assert isinstance(make_view(False, io.StringIO()), LineView)
