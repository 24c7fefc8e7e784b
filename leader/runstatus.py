"""What a running job reports: its status, its final result, its checkpoint's ``meta``.

Plain functions of a :class:`~eddl.leader.run.JobRun`, kept apart from the rules that change
it; the status dict is also the JSON ``detail`` of ``eddl status --json``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eddl.leader.run import JobRun

__all__ = ["checkpoint_meta", "final_result", "summary"]


def summary(run: JobRun) -> dict[str, Any]:
    now = run._now()
    round_ = run._round
    return {
        "job_id": run.spec.job_id,
        "status": run.status,
        "version": run.version,
        "epochs": round(run.scheduler.epochs, 4),
        "accuracy": run.accuracy,
        "best_accuracy": run.best_accuracy,
        "mode": run.mode,
        "mode_reason": run.mode_reason,
        "switches": [s.to_dict() for s in run.switches],
        "samples_trained": run.scheduler.samples_done,
        "work": run.work.to_dict(),
        "aggregation": run.aggregator.describe(),
        "policy": (None if run.policy is None else run.policy.metrics(now).to_dict()),
        "tasks_in_flight": len(run.scheduler.in_flight()),
        "requeued_ranges": len(run.scheduler.requeued()),
        "round": {
            "version": round_.version,
            "tasks": len(round_.tasks),
            "back": len(round_.settled),
        }
        if run.mode == "sync"
        else None,
        "result": dict(run.result),
        "layer_groups": run.layers.groups() if run.runtime.single_layer else None,
        "unable_nodes": {n: r for n, (_, r) in sorted(run._fit.items()) if r is not None},
        "failed_tasks": run.failed_tasks,
        "meta": None if run.runtime.meta is None else run.runtime.meta.status(run.version),
        "sanity": run.sanity.describe(),
    }


def final_result(run: JobRun, reason: str) -> dict[str, Any]:
    """What an ended job's status keeps saying once it is no longer in memory."""
    return {
        "reason": reason,
        "version": run.version,
        "accuracy": run.accuracy,
        "best_accuracy": run.best_accuracy,
        "epochs": round(run.scheduler.epochs, 4),
        "mode": run.mode,
        "mode_reason": run.mode_reason,
        "switches": [s.to_dict() for s in run.switches],
        "samples_trained": run.scheduler.samples_done,
        "work": run.work.to_dict(),
        "meta": None if run.runtime.meta is None else run.runtime.meta.status(run.version),
    }


def checkpoint_meta(run: JobRun) -> dict[str, Any]:
    """Stored beside a version, so a resumed job continues (and reports) from there."""
    return {
        "scheduler": run.scheduler.checkpoint(),
        "work": run.work.to_dict(),
        "switches": [s.to_dict() for s in run.switches],
        "mode": run.mode,
        "accuracy": run.accuracy,
        "best_accuracy": run.best_accuracy,
        "sanity": run.sanity.describe(),
    }
