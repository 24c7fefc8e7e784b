"""Jobs on a cluster with microcontrollers: who may run what, refusal at submission, and the
single-layer groups (assignment by fit and speed, per-layer aggregation). No gRPC: the
coordinator with a hand-driven clock and tiny integer runtimes."""

from __future__ import annotations

import itertools
import re
from dataclasses import replace

import numpy as np
import pytest
from structlog.testing import capture_logs

from eddl.leader.capability import McuCapabilities
from eddl.leader.coordinator import Coordinator
from eddl.leader.errors import NoCapableNodeError
from eddl.leader.events import EventKind
from eddl.leader.jobs import JobSpec
from eddl.leader.membership import Membership, NodeProfile, Role
from eddl.leader.run import Wait
from eddl.leader.runtime import JobRuntime, build_runtime
from eddl.leader.scheduler import Task
from eddl.leader.store import MemoryStore
from tests.unit.test_leader_support import Clock, spec

TRAIN = 240
SIZES = [64, 32, 10]  # TIFeD with mini-batches of 25 needs 19,025 arena bytes


def tifed_runtime(job: JobSpec) -> JobRuntime:
    """An integer model like TIFeD's (``SIZES`` unless the job names its own); single-layer
    when the job says so."""
    sizes = [int(s) for s in job.model.get("sizes", SIZES)]
    params = {}
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        params[f"W{i}"] = np.zeros((a, b), np.int32)
        params[f"b{i}"] = np.zeros(b, np.int32)
    single = job.algorithm == "tifed-single"
    return JobRuntime(
        initial_params=params,
        num_train=TRAIN,
        sync_rule="intmean" if job.algorithm.startswith("tifed") else "fedavg",
        num_layers=len(sizes) - 1,
        single_layer=single,
        granularity=1,
        info={"model": {"sizes": sizes}},
    )


def caps(
    arena: int, board: str = "ram64", algorithms: tuple[str, ...] = ("tifed",)
) -> McuCapabilities:
    return McuCapabilities(
        gateway_id="pi1",
        device="/dev/ttyACM0",
        board=board,
        arena_bytes=arena,
        algorithms=algorithms,
        max_layers=4,
    )


FITS = caps(53_248)
TOO_SMALL = caps(16_384, board="ram16")
SINGLE = caps(53_248, algorithms=("tifed", "tifed-single"))


def coordinator(clock: Clock, store: MemoryStore | None = None) -> Coordinator:
    membership = Membership(heartbeat_interval=1.0, now=clock, join_tokens={"tok": Role.WORKER})
    return Coordinator(
        store or MemoryStore(), membership=membership, runtime_factory=tifed_runtime, now=clock
    )


def join_mcu(c: Coordinator, node_id: str, mcu: McuCapabilities, sps: float | None = None) -> None:
    c.join(node_id, "tok", role="mcu", mcu=mcu, profile=NodeProfile(benchmark_sps=sps))


def job(**overrides: object) -> JobSpec:
    values: dict[str, object] = {"algorithm": "tifed", "hyper": {"batch_size": 25}}
    values.update(overrides)
    return spec(**values)


def push(c: Coordinator, t: Task, value: int, job_id: str = "job1") -> str:
    """An update whose every entry is ``value`` (only the task's layer in single-layer mode)."""
    params = c.model(job_id, t.base_version).params
    names = list(params) if t.layer is None else [f"W{t.layer}", f"b{t.layer}"]
    update = {n: np.full_like(params[n], value) for n in names}
    return c.submit_update(
        t.node_id,
        t.task_id,
        update,
        job_id=job_id,
        base_version=t.base_version,
        num_samples=t.num_samples,
    ).outcome


# -- who may run what ----------------------------------------------------------------------


def test_mcu_gets_tasks_of_a_job_that_fits_it() -> None:
    c = coordinator(Clock())
    join_mcu(c, "pi1.mcu0", FITS)
    c.submit_job(job())
    got = c.next_task("pi1.mcu0")
    assert isinstance(got, Task) and got.layer is None


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"algorithm": "sgd", "hyper": {}}, "runs tifed, not sgd"),
        ({"hyper": {"batch_size": 400}}, "needs"),
    ],
)
def test_mcu_never_gets_a_job_it_cannot_run_while_a_worker_does(
    overrides: dict[str, object], why: str
) -> None:
    clock = Clock()
    c = coordinator(clock)
    join_mcu(c, "pi1.mcu0", FITS)
    c.join("w1", "tok")
    with capture_logs() as logs:
        c.submit_job(job(**overrides))
        for _ in range(5):
            got = c.next_task("pi1.mcu0")
            assert isinstance(got, Wait) and not got.done
            assert why in got.reason and got.reason.startswith("pi1.mcu0 (mcu ram64) cannot run")
            clock.advance(0.1)
    # Said once per node and job, not on every poll.
    assert [e["event"] for e in logs].count("node_cannot_run_job") == 1
    assert isinstance(c.next_task("w1"), Task)
    status = c.job_status("job1")
    assert why in status["unable_nodes"]["pi1.mcu0"]
    assert "w1" not in status["unable_nodes"]


def test_sync_round_does_not_wait_for_a_node_that_cannot_run_the_job() -> None:
    clock = Clock()
    c = coordinator(clock)
    join_mcu(c, "pi1.mcu0", TOO_SMALL)
    c.join("w1", "tok")
    c.submit_job(job(task_seconds=100.0, round_deadline=500.0))
    t = c.next_task("w1")
    assert isinstance(t, Task)
    # The device never asks (it cannot run this job): the round closes as soon as w1 is back.
    assert push(c, t, 3) == "aggregated"
    assert c.job_status("job1")["version"] == 1


def test_static_shards_go_only_to_nodes_that_can_run_the_job() -> None:
    c = coordinator(Clock())
    join_mcu(c, "pi1.mcu0", TOO_SMALL)
    c.join("w1", "tok")
    c.submit_job(job(distribution="static", default_task_samples=240, max_task_samples=240))
    t = c.next_task("w1")
    assert isinstance(t, Task) and t.num_samples == TRAIN  # the whole epoch, no idle shard


def test_submit_is_refused_when_no_joined_node_can_run_the_job() -> None:
    store = MemoryStore()
    c = coordinator(Clock(), store)
    join_mcu(c, "pi1.mcu0", TOO_SMALL)
    join_mcu(c, "pi1.mcu1", caps(53_248, board="ram64"))
    with pytest.raises(NoCapableNodeError) as info:
        c.submit_job(job(hyper={"batch_size": 25}, model={"sizes": [784, 200, 10]}))
    message = str(info.value)
    assert NoCapableNodeError.code == "FAILED_PRECONDITION"
    assert message.startswith("no node can run this job (tifed): pi1.mcu0 (mcu ram16): ")
    assert "784-200-10 with mini-batches of 25 needs" in message
    assert "arena bytes; the device has 16,384; pi1.mcu1 (mcu ram64): 784-200-10" in message
    with pytest.raises(NoCapableNodeError, match="runs tifed, not sgd"):
        c.submit_job(job(algorithm="sgd", hyper={}))
    assert store.jobs() == [] and c.job_queue.active is None


SINE_JOB = {
    "job_id": "sine1",
    "dataset": "sine",
    "algorithm": "tinymetafed",
    "aggregation": "sync",
    "rounds": 2,
    "task_seconds": 0.5,
    "model": {"devices": 3, "held_out": 2, "samples": 5, "hidden": [8, 8]},
    "hyper": {"devices_per_round": 2, "local_layers": 1, "shots": 2},
}
OLD_FIRMWARE = replace(caps(53_248, algorithms=("lsgd",)), firmware_version="0.1.0")
NEW_FIRMWARE = replace(OLD_FIRMWARE, firmware_version="0.2.0", float_samples=True)


def test_a_float_sample_job_skips_an_mcu_whose_firmware_lacks_the_flag() -> None:
    """A sine job's samples are float32: a device whose HELLO does not offer them is refused
    at submission when it is the only node, and gets no task, with the reason, otherwise."""
    clock = Clock()
    membership = Membership(heartbeat_interval=1.0, now=clock, join_tokens={"tok": Role.WORKER})
    c = Coordinator(MemoryStore(), membership=membership, runtime_factory=build_runtime, now=clock)
    join_mcu(c, "pi1.mcu0", OLD_FIRMWARE)
    why = "the job's samples are float32 (inputs and targets)"
    with pytest.raises(NoCapableNodeError, match=re.escape(why)):
        c.submit_job(JobSpec.from_mapping(SINE_JOB))
    assert c.job_queue.active is None
    join_mcu(c, "pi1.mcu1", NEW_FIRMWARE)
    with capture_logs() as logs:
        c.submit_job(JobSpec.from_mapping(SINE_JOB))
        got = c.next_task("pi1.mcu0")
    assert isinstance(got, Wait) and not got.done
    assert got.reason.startswith("pi1.mcu0 (mcu ram64) cannot run job sine1: tinymetafed on ")
    assert why in got.reason
    refused = [e for e in logs if e["event"] == "node_cannot_run_job"]
    assert [e["node_id"] for e in refused] == ["pi1.mcu0"] and why in refused[0]["reason"]
    assert isinstance(c.next_task("pi1.mcu1"), Task)
    assert list(c.job_status("sine1")["unable_nodes"]) == ["pi1.mcu0"]


def test_submit_is_accepted_by_an_empty_cluster_or_one_capable_node() -> None:
    c = coordinator(Clock())
    c.submit_job(job(algorithm="sgd", hyper={}, job_id="empty"))
    d = coordinator(Clock())
    join_mcu(d, "pi1.mcu0", TOO_SMALL)
    d.join("w1", "tok")
    assert d.submit_job(job())["status"] == "running"


def test_rejoined_mcu_is_judged_again() -> None:
    c = coordinator(Clock())
    c.join("w1", "tok")
    join_mcu(c, "pi1.mcu0", TOO_SMALL)
    c.submit_job(job())
    assert isinstance(c.next_task("pi1.mcu0"), Wait)
    c.leave("pi1.mcu0")
    join_mcu(c, "pi1.mcu0", FITS)  # re-flashed with a bigger arena
    assert isinstance(c.next_task("pi1.mcu0"), Task)


def test_mcu_leave_requeues_its_task_and_a_rejoin_gets_it_back() -> None:
    c = coordinator(Clock())
    join_mcu(c, "pi1.mcu0", FITS)
    c.submit_job(job())
    first = c.next_task("pi1.mcu0")
    assert isinstance(first, Task)
    assert c.leave("pi1.mcu0") == 1
    assert [e.kind for e in c.events("job1")][-2:] == [
        EventKind.TASK_REQUEUED,
        EventKind.NODE_LEFT,
    ]
    join_mcu(c, "pi1.mcu0", FITS)
    again = c.next_task("pi1.mcu0")
    assert isinstance(again, Task) and again.task_id != first.task_id
    assert again.range == first.range


# -- single-layer groups -------------------------------------------------------------------


def test_layers_go_to_the_group_with_the_least_speed_and_every_layer_gets_one_first() -> None:
    c = coordinator(Clock())
    c.submit_job(job(algorithm="tifed-single"))
    join_mcu(c, "a", SINGLE, sps=100.0)
    join_mcu(c, "b", SINGLE, sps=10.0)
    c.join("c", "tok", profile=NodeProfile(benchmark_sps=50.0))
    join_mcu(c, "d", SINGLE, sps=10.0)
    layers = {n: c.next_task(n) for n in ("a", "b", "c", "d")}
    got = {n: t.layer for n, t in layers.items() if isinstance(t, Task)}
    # a -> 0 (both empty), b -> 1 (empty), c -> 1 (10 < 100), d -> 1 (60 < 100).
    assert got == {"a": 0, "b": 1, "c": 1, "d": 1}
    assert c.job_status("job1")["layer_groups"] == {0: ["a"], 1: ["b", "c", "d"]}


def test_nodes_of_unknown_speed_do_not_pile_into_one_group() -> None:
    c = coordinator(Clock())
    c.submit_job(job(algorithm="tifed-single"))
    join_mcu(c, "mcu1", SINGLE, sps=30.0)
    join_mcu(c, "mcu0", SINGLE, sps=20.0)
    c.join("py0", "tok")  # Python workers send no benchmark: speed unknown
    c.join("py1", "tok")
    got = {}
    for n in ("mcu1", "mcu0", "py0", "py1"):
        task = c.next_task(n)
        assert isinstance(task, Task)
        got[n] = task.layer
    # mcu1 -> 0, mcu0 -> 1 (empty groups first); py0 counts as fast as the fastest known
    # node: 0 holds 30, 1 holds 20 -> 1; py1: 0 holds 30, 1 holds 20 + 30 -> 0.
    assert got == {"mcu1": 0, "mcu0": 1, "py0": 1, "py1": 0}


def test_a_layer_chosen_before_the_node_was_measured_is_chosen_again() -> None:
    clock = Clock()
    c = coordinator(clock)
    c.submit_job(job(algorithm="tifed-single", aggregation="async"))
    c.join("py1", "tok")
    join_mcu(c, "mcu1", SINGLE, sps=40.0)
    c.join("py0", "tok")
    join_mcu(c, "mcu0", SINGLE, sps=40.0)
    first = {n: c.next_task(n) for n in ("py1", "mcu1", "py0", "mcu0")}
    assert {n: t.layer for n, t in first.items() if isinstance(t, Task)} == {
        "py1": 0,
        "mcu1": 1,
        "py0": 0,  # its speed is unknown: taken as the fastest known (40), a tie, index 0
        "mcu0": 1,
    }
    for name in ("py1", "py0"):  # the Python workers turn out 1000x faster than the MCUs
        task = first[name]
        assert isinstance(task, Task)
        c.submit_update(
            name,
            task.task_id,
            {
                n: np.zeros_like(v)
                for n, v in c.model("job1", task.base_version).params.items()
                if n.endswith("0")
            },
            job_id="job1",
            base_version=task.base_version,
            num_samples=task.num_samples,
            seconds=task.num_samples / 40_000.0,
        )
    second = {n: c.next_task(n) for n in ("py1", "py0")}
    # Both measured now. py1 is chosen again: layer 0 holds py0 (40,000/s), layer 1 80/s -> 1.
    # py0 is chosen again: without it layer 0 would be empty -> it stays on 0.
    assert {n: t.layer for n, t in second.items() if isinstance(t, Task)} == {"py1": 1, "py0": 0}
    assert c.job_status("job1")["layer_groups"] == {0: ["py0"], 1: ["mcu0", "mcu1", "py1"]}
    moved = [e.message for e in c.events("job1") if e.kind == EventKind.LAYER_GROUPS]
    assert any("py1 trains layer 1 (was 0" in m for m in moved), moved


def test_layer_is_kept_while_the_node_stays_and_freed_when_it_leaves() -> None:
    c = coordinator(Clock())
    c.submit_job(job(algorithm="tifed-single"))
    for n in ("a", "b", "c"):
        join_mcu(c, n, SINGLE)
    tasks = {n: c.next_task(n) for n in ("a", "b", "c")}
    assert {n: t.layer for n, t in tasks.items() if isinstance(t, Task)} == {
        "a": 0,
        "b": 1,
        "c": 0,  # nothing measured: the group with fewer members, then the lower index
    }
    assert c.next_task("c").layer == 0  # type: ignore[union-attr]  # same task, same layer
    c.leave("b")
    groups = [e for e in c.events("job1") if e.kind is EventKind.LAYER_GROUPS]
    assert groups[-1].message == "b left its layer group"
    assert c.job_status("job1")["layer_groups"] == {0: ["a", "c"], 1: []}
    join_mcu(c, "e", SINGLE)
    got = c.next_task("e")
    assert isinstance(got, Task) and got.layer == 1


def test_nodes_that_cannot_run_the_job_get_no_layer() -> None:
    c = coordinator(Clock())
    c.submit_job(job(algorithm="tifed-single"))
    join_mcu(c, "full-only", FITS)  # its firmware has no single-layer mode
    join_mcu(c, "a", SINGLE)
    assert isinstance(c.next_task("full-only"), Wait)
    got = c.next_task("a")
    assert isinstance(got, Task) and got.layer == 0
    assert c.job_status("job1")["layer_groups"] == {0: ["a"], 1: []}


def test_sync_round_averages_each_layer_over_its_own_group() -> None:
    c = coordinator(Clock())
    c.submit_job(job(algorithm="tifed-single"))
    for n in ("a", "b", "c"):
        join_mcu(c, n, SINGLE)
    ta, tb, tc = (c.next_task(n) for n in ("a", "b", "c"))
    assert isinstance(ta, Task) and isinstance(tb, Task) and isinstance(tc, Task)
    assert (ta.layer, tb.layer, tc.layer) == (0, 1, 0)
    push(c, ta, 3)
    push(c, tb, -5)
    assert push(c, tc, 6) == "aggregated"
    params = c.model("job1").params
    assert (params["W0"] == 4).all() and (params["b0"] == 4).all()  # trunc((3 + 6) / 2)
    assert (params["W1"] == -5).all() and (params["b1"] == -5).all()


def test_async_updates_move_only_their_own_layer() -> None:
    c = coordinator(Clock())
    c.submit_job(
        job(
            algorithm="tifed-single",
            aggregation="async",
            async_rule="fedbuff",
            async_params={"buffer_size": 2},
        )
    )
    for n in ("a", "b"):
        join_mcu(c, n, SINGLE)
    ta, tb = c.next_task("a"), c.next_task("b")
    assert isinstance(ta, Task) and isinstance(tb, Task) and (ta.layer, tb.layer) == (0, 1)
    assert push(c, ta, 7) == "buffered"
    assert push(c, tb, -2) == "aggregated"
    params = c.model("job1").params
    assert (params["W0"] == 7).all() and (params["W1"] == -2).all()
