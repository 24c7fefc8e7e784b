"""What a ``tinymetafed`` or ``reptile`` job adds to a :class:`~eddl.leader.runtime.JobRuntime`.

* The global model is the shared layers ``θ`` only: local layers are neither held nor sent.
* :class:`~eddl.leader.metasource.MetaSource` samples the devices of each round and gives
  every node its own device task.
* A TinyMetaFed upload arrives as sparse records of ``φ − θ`` (decoded and checked by the
  servicer, :mod:`eddl.net.sparse`); :meth:`MetaHooks.dense_update` refuses records for any
  tensor the leader does not hold (a local layer) or of another shape, and turns them into
  ``φ = θ_base + δ`` for the ``reptile`` rule, which then takes ``θ + ε · mean(φ_i − θ)``.
  Reptile uploads ``φ`` as dense tensors.
* The job's accuracy is the few-shot evaluation on the held-out devices
  (:func:`~eddl.learn.fewshot.few_shot_evaluate`, ``k = shots``): accuracy for classes, MSE
  for sine (reported, not an accuracy).
* Upload bytes are counted at the leader on the wire, per round (the base version of the
  update), and reported with the few-shot figures in the job's status and result.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from eddl.leader.errors import UpdateRejectedError
from eddl.leader.metasource import MetaSource
from eddl.learn.fewshot import few_shot_evaluate
from eddl.learn.params import Params
from eddl.metajob import MetaJob
from eddl.net.sparse import SparseRecord

if TYPE_CHECKING:
    from eddl.leader.run import JobRun

__all__ = ["MetaHooks", "MetaReport", "meta_params", "meta_upload"]

# Rounds whose upload bytes are kept for the status (older ones are folded into the totals).
_KEEP_ROUNDS = 64


@dataclass
class MetaReport:
    """What a meta job reports: few-shot figures and the bytes of the uploads, per round."""

    metric: str
    shots: int
    few_shot: float | None = None
    best: float | None = None
    upload_bytes: int = 0
    uploads: int = 0
    sparse_uploads: int = 0
    rounds: dict[int, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        per_round = {r: (sum(b) / len(b), len(b)) for r, b in sorted(self.rounds.items())}
        last = list(per_round.items())[-1] if per_round else None
        return {
            "metric": self.metric,
            "shots": self.shots,
            "few_shot": self.few_shot,
            "best_few_shot": self.best,
            "upload_bytes": self.upload_bytes,
            "uploads": self.uploads,
            "sparse_uploads": self.sparse_uploads,
            "upload_bytes_per_device_round": (
                self.upload_bytes / self.uploads if self.uploads else None
            ),
            "last_round": None
            if last is None
            else {"round": last[0], "devices": last[1][1], "bytes_per_device": last[1][0]},
        }


class MetaHooks:
    """The meta-learning parts of a job's runtime; see the module docstring."""

    def __init__(self, job: MetaJob, *, seed: int) -> None:
        self.job = job
        self.seed = seed
        self.shapes = {n: a.shape for n, a in job.initial_shared().items()}
        self.report = MetaReport(job.model.metric, job.options.shots)
        self.source: MetaSource | None = None

    @property
    def sparse(self) -> bool:
        return self.job.options.sparse

    def task_source(self, version: Callable[[], int]) -> MetaSource:
        c = self.job.config
        self.source = MetaSource(
            c.devices, self.job.options.devices_per_round, seed=self.seed, version=version
        )
        return self.source

    def evaluate(self, theta: Params) -> float | None:
        """Few-shot score of ``θ`` on the held-out devices; the job's accuracy (None: MSE)."""
        job = self.job
        result = few_shot_evaluate(
            job.model,
            job.split,
            theta,
            job.tasks.held_out,
            k=job.options.shots,
            opts=job.options,
            seed=self.seed,
            training_ids=job.tasks.training_ids,
        )
        r = self.report
        r.few_shot = result.mean
        higher = job.model.higher_is_better
        if r.best is None or (result.mean > r.best if higher else result.mean < r.best):
            r.best = result.mean
        return result.mean if higher else None

    def dense_update(
        self, base: Mapping[str, np.ndarray], records: Mapping[str, SparseRecord]
    ) -> Params:
        """``φ = θ_base + δ`` from an upload's decoded records; refuses before any change."""
        for name, rec in records.items():
            if name not in self.shapes:
                raise UpdateRejectedError(
                    f"sparse record {name!r}: not a shared tensor of this job "
                    f"(shared: {', '.join(self.shapes)}); local layers are never uploaded"
                )
            if rec.shape != self.shapes[name]:
                raise UpdateRejectedError(
                    f"sparse record {name!r}: shape {list(rec.shape)}, "
                    f"the job's is {list(self.shapes[name])}"
                )
        if not self.sparse:
            raise UpdateRejectedError(f"a {self.job.config.algorithm} job takes dense updates")
        out: Params = {}
        for name, theta in base.items():
            sent = records.get(name)
            out[name] = theta if sent is None else (theta + sent.dense()).astype(theta.dtype)
        return out

    def uploaded(self, version: int, nbytes: int, *, sparse: bool, sign: int = 1) -> None:
        """An update of round ``version`` was taken; ``nbytes`` crossed the wire for it
        (``sign = -1``: it was refused after all, take it out again)."""
        r = self.report
        r.upload_bytes += sign * int(nbytes)
        r.uploads += sign
        r.sparse_uploads += sign * int(sparse)
        sizes = r.rounds.setdefault(version, [])
        if sign > 0:
            sizes.append(int(nbytes))
        elif int(nbytes) in sizes:
            sizes.remove(int(nbytes))
        while len(r.rounds) > _KEEP_ROUNDS:
            del r.rounds[min(r.rounds)]
        for empty in [v for v, b in r.rounds.items() if not b]:
            del r.rounds[empty]

    def status(self, version: int) -> dict[str, Any]:
        out = self.report.to_dict()
        out["algorithm"] = self.job.config.algorithm
        out["task"] = self.job.tasks.name
        out["devices"] = self.job.config.devices
        out["held_out"] = self.job.config.held_out
        out["devices_per_round"] = self.job.options.devices_per_round
        out["dense_model_bytes"] = int(sum(4 * math.prod(s) for s in self.shapes.values()))
        if self.source is not None:
            out["device_of"] = dict(sorted(self.source.device_of.items()))
            out["sampled"] = list(self.source.sampled)
        return out


def meta_params(
    run: JobRun, params: Params, sparse: Mapping[str, SparseRecord] | None, base_version: int
) -> Params:
    """The model an update stands for: ``params`` as sent, or ``θ_base + δ`` from sparse records.

    A job that is not a TinyMetaFed job refuses sparse records, and a TinyMetaFed job refuses
    dense tensors; nothing changes before the update is taken.
    """
    meta = run.runtime.meta
    if sparse is None:
        if meta is not None and meta.sparse:
            raise UpdateRejectedError(
                f"a {meta.job.config.algorithm} job takes its uploads as sparse records"
            )
        return params
    if meta is None:
        raise UpdateRejectedError(
            f"a {run.spec.algorithm} job takes dense tensors, not sparse records"
        )
    if params:
        raise UpdateRejectedError("an update holds dense tensors or sparse records, not both")
    held = run.model_at(base_version)
    if held is None:
        raise UpdateRejectedError(f"model version {base_version} is no longer held")
    return meta.dense_update(held[1], sparse)


@contextlib.contextmanager
def meta_upload(run: JobRun, version: int, nbytes: int, *, sparse: bool) -> Iterator[None]:
    """Count an upload of a meta job while it is taken in; a refused one is not counted."""
    meta = run.runtime.meta
    if meta is None:
        yield
        return
    meta.uploaded(version, nbytes, sparse=sparse)
    try:
        yield
    except BaseException:
        meta.uploaded(version, nbytes, sparse=sparse, sign=-1)
        raise
