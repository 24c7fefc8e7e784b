"""Jobs that cannot run, over real gRPC: refused at submission, or failed without the fleet.

A job no worker could run is refused by ``SubmitJob`` (and by ``eddl submit`` before it sends
anything) with one line naming the key, and no job is created. A job that passes the checks but
whose tasks fail on the workers ends as ``failed``: the workers report each failed task, stay
up, and every watcher ends on the ``job_failed`` event.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from eddl.cli import main as cli_main
from eddl.cli.admin_client import watch_job
from eddl.net import open_channel
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc
from eddl.worker.training import NumpyExecutor
from tests.integration.cluster_support import DIGITS_JOB, Cluster, running_cluster, wait_until

SGD_MODEL = DIGITS_JOB["model"]
SHORT_JOB = {k: v for k, v in DIGITS_JOB.items() if k != "target_accuracy"}

BAD_JOBS: list[tuple[dict[str, Any], str]] = [
    ({"hyper": {"lr": -0.2, "batch_size": 8}}, "job.hyper.lr: must be > 0, got -0.2"),
    ({"hyper": {"lr": 0.2, "batch_size": 0}}, "job.hyper.batch_size: must be an int in 1..65536"),
    ({"hyper": {"lr": 0.2, "batch_size": -5}}, "job.hyper.batch_size: must be an int in 1..65536"),
    ({"local_epochs": 2**40}, "job.local_epochs: must be an int in 1..1000"),
    ({"hyper": {"lr": 1e308, "batch_size": 8}}, "job.hyper.lr: must be at most 10"),
    ({"model": {**SGD_MODEL, "sizes": [64, 10**12, 10]}}, "job.model.sizes: "),
]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with running_cluster(tmp_path) as c:
        yield c


async def test_jobs_no_worker_could_run_are_refused_and_nothing_changes(cluster: Cluster) -> None:
    await cluster.add_worker("w0")
    async with open_channel(cluster.address) as ch:
        admin = admin_pb2_grpc.AdminStub(ch)
        for overrides, start in BAD_JOBS:
            spec = json.dumps({**DIGITS_JOB, **overrides})
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await admin.SubmitJob(admin_pb2.SubmitJobRequest(spec_json=spec), timeout=30)
            detail = info.value.details() or ""
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, detail
            assert detail.startswith(start) and "\n" not in detail, detail
        deep = '{"rounds": 3, "model": {"sizes": ' + "[" * 100_000 + "]" * 100_000 + "}}"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await admin.SubmitJob(admin_pb2.SubmitJobRequest(spec_json=deep), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert cluster.coordinator.store.jobs() == []
    daemon, running = cluster.workers["w0"]
    assert daemon.joined and not running.done() and daemon.tasks_failed == 0


async def test_eddl_submit_checks_the_job_before_sending_it(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[job]\nrounds = 3\ndataset = "digits"\n[job.hyper]\nlr = -0.2\n')
    code = await asyncio.to_thread(cli_main, ["submit", str(path), "--leader", cluster.address])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"eddl: {path}: job.hyper.lr: must be > 0, got -0.2"
    deep = tmp_path / "deep.toml"
    deep.write_text("[job]\nrounds = 3\n[job.model]\nsizes = " + "[" * 1000 + "]" * 1000 + "\n")
    code = await asyncio.to_thread(cli_main, ["submit", str(deep), "--leader", cluster.address])
    assert code == 2 and "levels deep" in capsys.readouterr().err
    assert cluster.coordinator.store.jobs() == []


def _failing_job(tmp_path: Path) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(
        '[job]\ndataset = "digits"\nalgorithm = "sgd"\nrounds = 50\naggregation = "sync"\n'
        "task_seconds = 0.3\nround_deadline = 3.0\nmax_task_failures = 4\n"
        "[job.hyper]\nlr = 0.2\nbatch_size = 8\n"
    )
    return path


async def _submit_and_watch(cluster: Cluster, path: Path) -> tuple[int, list[str], str]:
    """``eddl submit --watch`` in a thread, and a second watcher over gRPC: both must end."""
    cli = asyncio.create_task(
        asyncio.to_thread(cli_main, ["submit", str(path), "--watch", "--leader", cluster.address])
    )
    await wait_until(lambda: bool(cluster.coordinator.store.jobs()), 30, "the job submitted")
    job_id = cluster.coordinator.store.jobs()[0].job_id
    kinds: list[str] = []
    final = await watch_job(cluster.address, job_id, lambda e: kinds.append(e.kind), timeout_s=60)
    assert final is not None and final.kind == "job_failed"
    return await asyncio.wait_for(cli, 30), kinds, job_id


async def test_a_job_whose_model_no_worker_can_hold_fails_and_the_workers_stay(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Workers that refuse models over 1 KiB (their max_model_bytes): every model pull fails.
    for name in ("w0", "w1"):
        await cluster.add_worker(name, max_model_bytes=1024)
    code, kinds, job_id = await _submit_and_watch(cluster, _failing_job(tmp_path))
    assert code == 1  # eddl submit --watch ended on job_failed, with a failure status
    assert kinds.count("task_failed") == 4 and kinds[-1] == "job_failed"
    status = cluster.status(job_id)
    assert status["status"] == "failed" and status["version"] == 0
    assert "4 tasks failed in a row" in status["result"]["reason"]
    assert "ChunkTooLargeError" in status["result"]["reason"]
    assert cluster.coordinator.store.job(job_id).status == "failed"  # type: ignore[union-attr]
    for name in ("w0", "w1"):
        daemon, running = cluster.workers[name]
        assert daemon.joined and not running.done()
    assert sum(cluster.workers[n][0].tasks_failed for n in ("w0", "w1")) == 4


async def test_a_worker_whose_trainer_raises_reports_it_and_then_trains_the_next_job(
    cluster: Cluster, tmp_path: Path
) -> None:
    daemon = await cluster.add_worker("w0")
    assert isinstance(daemon.executor, NumpyExecutor)
    runner = daemon.executor.runner
    real_train = runner._train

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the trainer broke")

    runner._train = broken  # type: ignore[method-assign]
    code, kinds, job_id = await _submit_and_watch(cluster, _failing_job(tmp_path))
    assert code == 1 and kinds[-1] == "job_failed"
    assert "RuntimeError: the trainer broke" in cluster.status(job_id)["result"]["reason"]
    assert daemon.joined and daemon.tasks_failed == 4
    # The same worker process, its trainer mended, runs the next job to the end.
    runner._train = real_train  # type: ignore[method-assign]
    good = await cluster.submit({**SHORT_JOB, "rounds": 2})
    status = await cluster.wait_job(good, 60)
    assert status["status"] == "completed" and daemon.tasks_done >= 1
