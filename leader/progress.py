"""How a running job moves on: rounds close, versions are made, evaluated and checkpointed,
time passes (deadlines, overdue tasks, the auto policy), the job ends.

Functions of a :class:`~eddl.leader.run.JobRun`, apart from the handling of requests (which
stays in ``run``), so that each module holds one idea.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eddl.leader import capability, evaluation
from eddl.leader.aggregator import Aggregator, NewVersion
from eddl.leader.events import EventKind
from eddl.leader.history import ModeSwitch
from eddl.leader.membership import Node
from eddl.leader.policy import Mode
from eddl.leader.rounds import SyncRound
from eddl.leader.runstatus import checkpoint_meta, final_result
from eddl.leader.sizing import RoundTarget
from eddl.leader.store import CheckpointStore, VersionRecord, WriteBatch
from eddl.leader.updates import Wait
from eddl.learn.params import Params

if TYPE_CHECKING:
    from eddl.leader.run import JobRun

__all__ = [
    "checkpoint",
    "close_round",
    "finish",
    "layer_of",
    "maybe_finish",
    "new_version",
    "node_gone",
    "node_joined",
    "start_or_resume",
    "sync_target",
    "tick",
]


def sync_target(run: JobRun, node_id: str, now: float) -> RoundTarget | Wait | None:
    """What a task handed to ``node_id`` in the open sync round aims at (None: a full task of
    a new round), or why it gets none: it had its task of this round, or it sits short rounds
    out (its smallest task would hold every round back: ``TaskSizer.round_target``)."""
    if node_id in run._round.asked:
        return Wait(f"waiting for round {run.version} to close", run._retry())
    target = run.scheduler.round_target()
    if node_id in target.sit_out:
        run._round.sits_out(node_id)
        # Left out by the sizing rule, not waiting for the barrier: no idle for the policy.
        run._free_since.pop(node_id, None)
        return Wait(
            f"sitting out round {run.version}: its smallest task would take longer than the "
            f"round's {target.seconds:.3f} s of training",
            run._retry(),
        )
    return run._round.budget(now, target)


def close_round(run: JobRun, why: str, *, deadline: bool = False) -> NewVersion | None:
    r = run._round
    if run.mode != "sync" or not r.tasks:
        return None
    outstanding = r.outstanding
    if not deadline and not r.complete(run._now(), run._workers, run.spec.task_seconds):
        return None
    if run.aggregator.round_size() == 0:
        if not outstanding:  # everything was taken back: start the round afresh
            run._round = SyncRound(run.version)
        return None
    produced = run.aggregator.close_round()
    if produced is not None:
        run._event(
            EventKind.ROUND_CLOSED,
            f"round {r.version} closed ({why}) with {produced.updates} update(s)",
            version=r.version,
            updates=produced.updates,
            late=len(outstanding),
            reason=why,
        )
    return produced


def new_version(run: JobRun, produced: NewVersion) -> None:
    run._round = SyncRound(produced.version)
    if run.policy is not None:  # updates per version: what one of this mode's steps sums
        run.policy.observe_version(produced.updates, run._now())
    # Evaluated beside the owner (the result comes back later), or at once without an
    # evaluator; ``accuracy`` here is the newest known when the version is made.
    done = (
        evaluation.ask(run, produced.version, produced.params)
        if produced.version % run.spec.eval_every == 0
        else None
    )
    run._event(
        EventKind.MODEL_UPDATED,
        f"version {produced.version} by {produced.how}",
        version=produced.version,
        updates=produced.updates,
        samples=produced.samples,
        accuracy=run.accuracy if done is None else done.accuracy,
        mode=run.mode,
        epochs=round(run.scheduler.epochs, 4),
    )
    if done is not None:
        evaluation.record(run, done)
    checkpoint(run)


def checkpoint(run: JobRun, *, force: bool = False) -> None:
    # Called right after a version is made, when the round or the async buffer has just
    # been emptied into it: every task the scheduler counts as done is in this version, and
    # everything in flight is written as "to do", so a resumed job loses no sample.
    v = run.version
    if v <= run._saved_version:
        return
    if not force and v % run.spec.checkpoint_every != 0:
        return
    meta = checkpoint_meta(run)
    # One batch: through the coordinator's outbox, the version, its prune and the events of
    # the same command are committed in one transaction.
    record = VersionRecord(run.spec.job_id, v, run.aggregator.params, meta, run._now())
    run.store.commit(WriteBatch(versions=[record], prunes=[(run.spec.job_id, 3)]))
    run._saved_version = v


def maybe_finish(run: JobRun) -> None:
    if run.status != "running":
        return
    s = run.spec
    reason = None
    if (
        s.target_accuracy is not None
        and run.accuracy is not None
        and run.accuracy >= s.target_accuracy
    ):
        reason = f"test accuracy {run.accuracy:.4f} >= target {s.target_accuracy}"
    elif s.rounds is not None and run.version >= s.rounds:
        reason = f"{run.version} model versions >= rounds {s.rounds}"
    elif run.scheduler.exhausted:
        # The last updates go into a version in the mode that ran: the job's status keeps
        # saying which mode that was, and why.
        last = run.aggregator.flush()
        if last is not None:
            new_version(run, last)
        reason = f"{run.scheduler.epochs:.2f} epochs >= max_epochs {s.max_epochs}"
    if reason is not None and evaluation.end_training(run, reason):
        finish(run, "completed", reason)


def finish(run: JobRun, status: str, reason: str) -> None:
    """End the job (``completed``, ``failed`` or ``cancelled``), a version forced to the store."""
    run.status = status
    run.result = final_result(run, reason)
    checkpoint(run, force=True)
    kind = {
        "completed": EventKind.JOB_COMPLETED,
        "failed": EventKind.JOB_FAILED,
    }.get(status, EventKind.JOB_CANCELLED)
    run._event(kind, f"job {status}: {reason}", **run.result)


def tick(run: JobRun, link_capacity_bps: float | None = None) -> None:
    """Deadlines, overdue tasks, the auto policy and the end of the job; call often."""
    if run.status != "running":
        return
    now = run._now()
    lease = 2.0 * run.spec.round_deadline
    for task in run.scheduler.overdue(lease):
        run._take_back(
            task,
            f"out for more than {lease:g} s",
            f"task {task.task_id} of {task.node_id} re-queued (out for more than {lease:g} s)",
            node_id=task.node_id,
        )
    if run.mode == "sync":
        produced = (
            close_round(run, "round deadline", deadline=True)
            if run._round.past(now, run.spec.round_deadline)
            else close_round(run, "every task of the round is back")
        )
        if produced:
            new_version(run, produced)
    if link_capacity_bps and now - run._bytes_since >= 1.0:
        busy = run._bytes * 8.0 / (now - run._bytes_since) / link_capacity_bps
        if run.policy is not None:
            run.policy.observe_bandwidth(min(1.0, busy), now)
        run._bytes, run._bytes_since = 0, now
    if run.policy is not None:
        switch = run.policy.decide(now)
        if switch is not None:
            produced = run.aggregator.switch(switch.mode)
            run._round = SyncRound(run.version)
            run.switches.append(
                ModeSwitch(now, run.version, switch.previous, switch.mode, switch.reason)
            )
            run._event(
                EventKind.POLICY_SWITCHED,
                f"{switch.previous} -> {switch.mode}: {switch.reason}",
                previous=switch.previous,
                mode=switch.mode,
                reason=switch.reason,
                metrics=switch.metrics.to_dict(),
            )
            if produced:
                new_version(run, produced)
    maybe_finish(run)


def layer_of(run: JobRun, node: Node) -> int | None:
    """Single-layer mode: the layer ``node`` trains (:class:`~eddl.leader.layers.LayerGroups`
    chooses among the layers the node can train, by group speed)."""
    if not run.runtime.single_layer:
        return None
    new = node.node_id not in run.layers
    trainable = capability.trainable_layers(
        node, run.spec.algorithm, run._model_spec, run.spec.hyper, run.runtime.num_layers
    )
    # Not empty: next_task hands nothing to a node that cannot run the job.
    layer, was = run.layers.assign(
        node.node_id,
        trainable,
        run.scheduler.samples_per_second,
        run.scheduler.measured(node.node_id),
    )
    if new or was is not None:
        moved = "" if was is None else f" (was {was}; its speed is now measured)"
        run._event(
            EventKind.LAYER_GROUPS,
            f"{node.node_id} trains layer {layer}{moved}",
            node_id=node.node_id,
            layer=layer,
            groups=run.layers.groups(),
        )
    return layer


def kept_before(store: CheckpointStore, job_id: str, version: int) -> dict[int, Params]:
    """The versions before ``version`` the store still holds."""
    older = (store.load_version(job_id, v) for v in store.versions(job_id) if v < version)
    return {rec.version: rec.params for rec in older if rec is not None}


def start_or_resume(run: JobRun, start: Mode, *, resumed: bool) -> None:
    """The job's first event; a new job also stores its version 0."""
    version = run.version
    if resumed:
        if isinstance(run.aggregator, Aggregator):  # bases of updates to tasks handed out before
            run.aggregator.recall(kept_before(run.store, run.spec.job_id, version))
        if run.policy is not None:
            run.policy.reason = f"resumed in {start} mode, the mode at the checkpoint"
        run._event(
            EventKind.JOB_RESUMED,
            f"resumed from checkpoint version {version}",
            version=version,
            mode=start,
        )
        return
    spec = run.spec
    run._event(
        EventKind.JOB_STARTED,
        f"started {spec.algorithm} on {spec.dataset}, {start} aggregation",
        version=0,
        mode=start,
        rule=run.aggregator.describe()["rule"],
    )
    checkpoint(run, force=True)


def node_joined(run: JobRun, node: Node, workers: list[Node]) -> None:
    """A node joined: its benchmark is the scheduler's first guess of its speed."""
    run.scheduler.set_prior(node.node_id, node.profile.benchmark_sps)
    if run.policy is not None:
        run.policy.observe_churn(run._now())
    run.set_nodes(workers)
    run.events.append(
        EventKind.NODE_JOINED,
        run._now(),
        f"{node.role.value} {node.node_id} joined",
        node_id=node.node_id,
        session=node.session,
        benchmark_sps=node.profile.benchmark_sps,
    )


def node_gone(run: JobRun, node: Node, kind: str) -> None:
    """A node left or expired: its in-flight task goes back to the queue at once, and its
    place in a layer group is free; the event says which and why."""
    run._free_since.pop(node.node_id, None)
    run._fit.pop(node.node_id, None)
    if run.layers.release(node.node_id):
        run._event(
            EventKind.LAYER_GROUPS,
            f"{node.node_id} left its layer group",
            groups=run.layers.groups(),
        )
    # Newest first, so the oldest range ends at the front of the re-queue.
    held = [t for t in run.scheduler.in_flight() if t.node_id == node.node_id]
    for task in sorted(held, key=lambda t: t.issued_at, reverse=True):
        run._take_back(
            task,
            f"node {kind}",
            f"task {task.task_id} of {node.node_id} re-queued ({kind})",
            node_id=node.node_id,
        )
    run.scheduler.take_back_node(node.node_id, f"node {kind}")  # its static shard
    run._round.forget(node.node_id)
    if run.policy is not None:
        # A clean leave costs sync no more than async; an expiry stalled the round.
        run.policy.observe_churn(run._now(), expiry=kind != "left")
    if run.mode == "sync":
        produced = close_round(run, "the rest of the round is back")
        if produced:
            new_version(run, produced)
    run.events.append(
        EventKind.NODE_LEFT if kind == "left" else EventKind.NODE_EXPIRED,
        run._now(),
        f"{node.node_id} {kind} ({node.leave_reason or node.gone_reason})",
        node_id=node.node_id,
        session=node.session,
    )
