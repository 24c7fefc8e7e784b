"""The daemons as operators see them, as real processes: /metrics (checked by promtool and
scraped by a real Prometheus), `eddl health`, and systemd's notify datagrams."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from eddl.proto.v1 import cluster_pb2, cluster_pb2_grpc
from tests.e2e.procs import Proc, eddl, spawn, start_leader, start_worker, wait_done, wait_for
from tests.ports import free_port

JOB = """
[job]
dataset = "digits"
algorithm = "sgd"
aggregation = "auto"
task_seconds = 0.3
round_deadline = 3.0
max_epochs = 10000.0
rounds = 40
[job.model]
sizes = [64, 32, 10]
activations = ["tanh", "sigmoid"]
loss = "bce"
[job.hyper]
lr = 0.2
batch_size = 8
"""


def scrape(port: int) -> str:
    reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    reply.raise_for_status()
    return reply.text


def promtool_check(text: str) -> None:
    done = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), (
        done.stdout + done.stderr
    )


def submit(tmp: Path, address: str) -> str:
    path = tmp / "job.toml"
    path.write_text(JOB)
    done = eddl("submit", str(path), "--leader", address, "--json")
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["job_id"])


def value(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def push_from_a_stranger(address: str) -> tuple[str, str]:
    """An update from a node that never joined (no session credential, in the loopback mode
    these daemons run): the leader refuses it; (code, reason)."""
    header = cluster_pb2.UpdateHeader(task_id="t1", num_samples=1)
    header.envelope.node_id = "stranger"
    header.envelope.job_id = "job-x"
    with grpc.insecure_channel(address) as channel:
        stub = cluster_pb2_grpc.ClusterStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.PushUpdate(iter([cluster_pb2.UpdateChunk(header=header)]), timeout=10)
    error = refused.value
    reason = dict(error.trailing_metadata() or ()).get("eddl-reason", "") or "none"  # type: ignore[attr-defined]
    assert reason == "unauthenticated", reason
    return error.code().name.lower(), reason  # type: ignore[attr-defined]


def total(text: str, name: str) -> float:
    """The sum of a family's samples over all its labels."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    )


@contextlib.contextmanager
def cluster(
    tmp: Path,
    workers: int,
    *,
    leader_metrics: int,
    extra: tuple[str, ...] = (),
    throttle: float = 1.0,
) -> Iterator[tuple[str, list[Proc]]]:
    procs: list[Proc] = []
    try:
        metrics = ["--metrics-bind", f"127.0.0.1:{leader_metrics}", *extra]
        leader, address = start_leader(tmp, extra=metrics)
        procs.append(leader)
        for i in range(workers):
            procs.append(start_worker(tmp, address, f"w{i}", throttle=throttle))
        yield address, procs
    finally:
        for proc in reversed(procs):
            proc.stop()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing (apt prometheus)")
def test_metrics_pass_promtool_and_follow_a_job(tmp_path: Path) -> None:
    port, worker_port = free_port(), free_port()
    # A known link capacity: the leader shows how busy the job keeps its link.
    link = ("--link-capacity-mbps", "10000")  # well above the traffic: no policy switch
    # Slowed down so that the job's 40 rounds last seconds, long enough to be scraped while
    # it runs (unslowed, digits rounds take milliseconds).
    slow = 200.0
    with cluster(tmp_path, 1, leader_metrics=port, extra=link, throttle=slow) as (address, procs):
        extra = ["--metrics-bind", f"127.0.0.1:{worker_port}"]
        procs.append(start_worker(tmp_path, address, "wm", throttle=slow, extra=extra))
        wait_for(lambda: eddl("health", address).returncode == 0, 30, "the leader SERVING")
        before = scrape(port)
        assert value(before, "eddl_leader_serving") == 1.0
        assert value(before, "eddl_model_version") is None  # no job yet: no job metrics
        submit(tmp_path, address)
        # While the job runs, the leader shows each node's measured speed.
        speed = 'eddl_leader_node_samples_per_second{node="w0",role="worker"}'
        wait_for(lambda: speed in scrape(port), 60, "w0's speed on the leader's endpoint")
        box: list[float] = []

        def busy() -> bool:
            share = value(scrape(port), "eddl_job_link_busy_ratio")
            box[:] = [] if share is None else [share]
            return share is not None and share > 0

        wait_for(busy, 60, "the link busy share on the leader's endpoint", step=0.2)
        assert 0 < box[0] <= 1
        assert wait_done(address, within=150)["state"] == "completed"
        refused = push_from_a_stranger(address)
        after = scrape(port)
        worker = scrape(worker_port)
    promtool_check(before)
    promtool_check(after)
    promtool_check(worker)
    assert value(after, "eddl_model_version") == 40
    assert total(after, "eddl_leader_updates_accepted_total") >= 40
    assert (value(after, "eddl_job_samples_trained_total") or 0) > 0
    assert 'eddl_leader_received_bytes_total{method="PushUpdate"}' in after
    # The stranger's update is counted by its status code and the reason the leader gave.
    line = f'eddl_leader_updates_refused_total{{code="{refused[0]}",reason="{refused[1]}"}} 1.0'
    assert line in after, after
    assert 'eddl_leader_update_seconds_bucket{le="+Inf"}' in after
    assert 'eddl_leader_nodes_alive{role="worker"} 2.0' in after
    assert (value(worker, "eddl_worker_tasks_done_total") or 0) >= 1
    done = value(worker, "eddl_worker_tasks_done_total")
    assert value(worker, 'eddl_worker_task_seconds_count{device=""}') == done
    assert 'eddl_worker_link_upload_bytes_per_second{device="",peer=' in worker


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus missing (apt)")
def test_a_real_prometheus_sees_the_model_version_rise(tmp_path: Path) -> None:
    port, prom_port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: eddl-leader\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    prom = spawn(
        "prometheus",
        [
            "prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        tmp_path / "prometheus.log",
    )  # fmt: skip
    api = f"http://127.0.0.1:{prom_port}/api/v1/query"
    try:
        with cluster(tmp_path, 2, leader_metrics=port) as (address, _):
            # Prometheus scrapes the leader before the job starts, so the first version it
            # records is an early one even when the job runs fast.
            scraped = False
            ready_by = time.monotonic() + 60
            for _ in range(120):
                if scraped or time.monotonic() > ready_by:
                    break
                assert prom.alive(), prom.log.read_text()[-2000:]
                with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                    reply = httpx.get(api, params={"query": "up"}, timeout=5)
                    scraped = any(r["value"][1] == "1" for r in reply.json()["data"]["result"])
                time.sleep(0.5)
            assert scraped, "Prometheus never scraped the leader"
            submit(tmp_path, address)
            seen: list[float] = []
            deadline = time.monotonic() + 120
            for _ in range(240):
                if time.monotonic() > deadline or (len(seen) >= 2 and seen[-1] > seen[0]):
                    break
                assert prom.alive(), prom.log.read_text()[-2000:]
                with contextlib.suppress(httpx.HTTPError):
                    reply = httpx.get(api, params={"query": "eddl_model_version"}, timeout=5)
                    result = reply.json()["data"]["result"]
                    if result:
                        v = float(result[0]["value"][1])
                        if not seen or v != seen[-1]:
                            seen.append(v)
                time.sleep(0.5)
            assert len(seen) >= 2 and seen[-1] > seen[0], seen
            rate = httpx.get(
                api, params={"query": "max_over_time(eddl_model_version[5m])"}, timeout=5
            ).json()
            assert float(rate["data"]["result"][0]["value"][1]) >= seen[-1]
    finally:
        prom.stop()
