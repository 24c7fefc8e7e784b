"""deploy/grafana's dashboard asks only for metrics that live daemons export.

A leader, a worker and a gateway with one emulated microcontroller run as processes with
``--metrics-bind``; a job runs on them; every metric name in every PromQL expression of the
dashboard must be among the names their endpoints expose (``# TYPE`` lines, with the sample
suffixes of each type). The leader election row is checked against elected candidates on etcd
in ``tests/integration/test_ha_metrics.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from eddl.mcu.launch import FirmwareError, start_sim
from tests.e2e.procs import TOKEN, eddl, script, spawn, start_leader, start_worker, wait_for
from tests.e2e.test_ops_daemons import free_port, promtool_check, scrape

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "eddl-cluster.json"
# Its panels read elected candidates' metrics: tests/integration/test_ha_metrics.py checks them.
HA_ROW = "Leader election and replication"
JOB = """
[job]
dataset = "digits"
algorithm = "tifed"
aggregation = "auto"
task_seconds = 0.3
round_deadline = 5.0
max_epochs = 10000.0
rounds = 8
min_task_samples = 25
[job.model]
sizes = [64, 32, 10]
[job.hyper]
lr_inv = 2048
batch_size = 25
"""
# PromQL words that are neither metrics nor functions (functions are followed by "(").
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
             "or", "unless", "offset"}  # fmt: skip
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def exposed_names(text: str) -> set[str]:
    """Sample names an endpoint exposes, empty families included."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        suffixes = _SUFFIXES.get(family.type, ("",))
        names.update(family.name + s for s in suffixes)
        names.update(s.name for s in family.samples)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", text)  # grouping labels
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        rest = text[match.end() :].lstrip()
        if word in _KEYWORDS or rest.startswith("("):
            continue
        names.add(word)
    return names


def try_scrape(port: int) -> str:
    try:
        return scrape(port)
    except httpx.HTTPError:
        return ""  # not serving yet


def dashboard_exprs(*, ha: bool | None = None) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target; ``ha``: only the panels of the leader election
    row (True), only the others (False), or all (None)."""
    board = json.loads(DASHBOARD.read_text())
    out, row = [], ""
    for panel in board["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
        if ha is None or (row == HA_ROW) == ha:
            out.extend((panel["title"], target["expr"]) for target in panel.get("targets", []))
    return out


def test_the_expression_reader_finds_metrics_and_skips_functions_and_labels() -> None:
    expr = (
        'histogram_quantile(0.5, sum by (instance, le) (rate(eddl_a_bucket{x="y"}[5m]))) '
        "/ on (instance) eddl_b_total"
    )
    assert metric_names(expr) == {"eddl_a_bucket", "eddl_b_total"}
    assert all(metric_names(e) for _, e in dashboard_exprs())
    assert dashboard_exprs(ha=True) and dashboard_exprs(ha=False)


@pytest.mark.slow
def test_every_dashboard_metric_is_exported_by_a_live_daemon(tmp_path: Path) -> None:
    try:
        device = start_sim("tcp", lifetime=180)
    except FirmwareError as exc:
        pytest.skip(f"the firmware host simulator cannot be built here: {exc}")
    ports = [free_port() for _ in range(3)]
    procs = []
    try:
        leader, address = start_leader(tmp_path, extra=["--metrics-bind", f"127.0.0.1:{ports[0]}"])
        procs.append(leader)
        extra = ["--metrics-bind", f"127.0.0.1:{ports[1]}"]
        procs.append(start_worker(tmp_path, address, "w0", extra=extra))
        gateway = [
            script("eddl-worker"), "--leader", address, "--node-id", "gw", "--insecure",
            "--join-token", TOKEN,
            "--mcu", device.url, "--metrics-bind", f"127.0.0.1:{ports[2]}",
        ]  # fmt: skip
        procs.append(spawn("gw", gateway, tmp_path / "gw.log"))
        wait_for(lambda: "eddl_mcu_tasks_total" in try_scrape(ports[2]), 60, "the device to join")
        job = tmp_path / "job.toml"
        job.write_text(JOB)
        done = eddl("submit", str(job), "--leader", address, "--watch", timeout=150)
        assert done.returncode == 0, done.stdout + done.stderr
        texts = [scrape(port) for port in ports]
    finally:
        for proc in reversed(procs):
            proc.stop()
        device.close()
    for text in texts:
        promtool_check(text)
    exposed = set().union(*(exposed_names(t) for t in texts))
    missing = {
        (title, name)
        for title, expr in dashboard_exprs(ha=False)  # a lone leader: no election row
        for name in metric_names(expr)
        if name not in exposed
    }
    assert not missing, f"dashboard metrics no daemon exports: {sorted(missing)}"
    # The MCU device trained, and the worker's task histogram counted its tasks.
    assert 'eddl_worker_task_seconds_count{device="mcu0"}' in texts[2]
    assert re.search(r'eddl_worker_task_seconds_count\{device=""\} [1-9]', texts[1])
