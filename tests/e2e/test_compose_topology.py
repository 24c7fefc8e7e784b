"""compose.yaml is valid Compose, and its topology, run as processes, trains a job to the end.

See :mod:`tests.e2e.compose_procs` for how containers become processes: etcd (Debian's
binary), the one-shot certificate service, three leader candidates, workers and the gateway.
The root candidate's process is killed mid-job; the job completes on the standby that takes
over. What this cannot run:
the image build (the Dockerfile) and Docker's own networking; docs/compose.md says so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from eddl.mcu.build import FirmwareError
from eddl.mcu.launch import sim_binary
from tests.e2e.compose_procs import (
    ServiceProcess,
    Topology,
    awaited,
    load_compose,
    plan,
    read_env_file,
)
from tests.e2e.procs import eddl, wait_for
from tests.e2e.test_ops_daemons import JOB

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 2
ROUNDS = 80
CANDIDATES = ("leader-1-1", "leader-2-1", "leader-3-1")


def test_compose_file_is_valid_against_the_compose_spec_schema() -> None:
    exe = Path(sys.executable).parent / "check-jsonschema"
    if not exe.exists():
        pytest.skip("check-jsonschema is not installed (pip install -e '.[test]')")
    done = subprocess.run(
        [str(exe), "--builtin-schema", "vendor.compose-spec", str(ROOT / "compose.yaml")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_needs_the_join_token_from_the_env_file() -> None:
    with pytest.raises(ValueError, match="EDDL_JOIN_TOKEN"):
        load_compose(ROOT / "compose.yaml", {})


def test_the_image_makes_the_mount_points_of_its_services_volumes() -> None:
    """Docker fills a new named volume from the image's folder, owner included: each mount
    point of an EDDL service must exist in the image, made by the eddl user (after USER)."""
    text = (ROOT / "Dockerfile").read_text().split("USER 10001:10001", 1)[1]
    workdir = re.search(r"^WORKDIR (\S+)$", text, re.M)
    made = re.search(r"^RUN mkdir -p ([^\n]+)$", text, re.M)
    assert workdir is not None and made is not None
    folders = {f"{workdir[1]}/{name}" for name in made[1].split()}
    compose = load_compose(ROOT / "compose.yaml", read_env_file(ROOT / ".env.example"))
    targets = {
        str(mount).partition(":")[2] or str(mount)
        for service in compose["services"].values()
        if service.get("image") == "eddl:latest"
        for mount in [*service.get("volumes", []), *service.get("tmpfs", [])]
    }
    assert targets and targets <= folders, targets - folders


def _healthy(p: ServiceProcess, logs: Path) -> bool:
    """Run the service's healthcheck as Compose would, in the service's environment."""
    assert p.healthcheck is not None and p.popen is not None
    if p.popen.poll() is not None:
        tail = (logs / f"{p.replica}.log").read_text(errors="replace")[-4000:]
        raise AssertionError(f"{p.replica} exited with {p.popen.returncode}:\n{tail}")
    argv = [shutil.which(p.healthcheck[0], path=p.env["PATH"]) or "", *p.healthcheck[1:]]
    done = subprocess.run(argv, env=p.env, capture_output=True, timeout=30, check=False)
    return done.returncode == 0


def _enrol_admin(topo: Topology, address: str) -> None:
    """What the compose.yaml header tells an operator: an admin token, then `eddl enrol`."""
    state = topo.root / "volumes" / "leader-1-state"
    done = eddl("token", "create", "--state-dir", str(state), "--role", "admin")
    assert done.returncode == 0, done.stderr
    bootstrap = f"127.0.0.1:{topo.port('leader-1-1', 50052)}"
    done = eddl("enrol", done.stdout.strip(), "--leader", address, "--bootstrap", bootstrap)
    assert done.returncode == 0, done.stderr


def _status(address: str) -> dict[str, Any] | None:
    """``eddl status --json`` through any candidate (a standby names the root); None while
    there is no root to answer (a takeover under way)."""
    done = eddl("status", "--json", "--leader", address, timeout=30)
    return json.loads(done.stdout) if done.returncode == 0 else None


def _wait_status(
    addresses: list[str], predicate: Callable[[dict[str, Any]], bool], within: float, what: str
) -> dict[str, Any]:
    box: dict[str, Any] = {}

    def seen() -> bool:
        for address in addresses:
            got = _status(address)
            if got is not None:
                box.clear()
                box.update(got)
                return predicate(got)
        return False

    wait_for(seen, within, what, step=0.5)
    return box


def _start(p: ServiceProcess, tmp: Path) -> None:
    with (tmp / f"{p.replica}.log").open("wb") as log:
        p.popen = subprocess.Popen(
            p.argv, env=p.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(p: ServiceProcess) -> None:
    if p.popen is not None and p.popen.poll() is None:
        p.popen.send_signal(signal.SIGTERM)
        try:
            p.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.popen.kill()
            p.popen.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_compose_topology_trains_a_job_through_a_failover_as_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDDL_CONFIG_DIR", str(tmp_path / "admin"))
    try:
        sim = sim_binary()
    except FirmwareError as exc:
        pytest.skip(f"cannot build the MCU simulator: {exc}")
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (apt etcd-server)")
    if shutil.which("etcdctl") is None:  # the etcd service's healthcheck in compose.yaml
        pytest.skip("etcdctl is not installed (apt etcd-client)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "eddl-mcu-sim").symlink_to(sim)
    env = read_env_file(ROOT / ".env.example")
    compose = load_compose(ROOT / "compose.yaml", env)
    topo = Topology(list(compose["services"]), tmp_path)
    procs = plan(compose, topo, {"worker": WORKERS}, [bin_dir, Path(sys.executable).parent])
    assert [p.replica for p in procs] == [
        "etcd-1",
        "pki-1",
        *CANDIDATES,
        *(f"worker-{i}" for i in range(1, WORKERS + 1)),
        "gateway-1",
    ]
    healthy, completed = "service_healthy", "service_completed_successfully"
    assert awaited(compose) == {
        "etcd": healthy, "pki": completed, "leader-1": healthy, "leader-2": healthy,
        "leader-3": healthy,
    }  # fmt: skip
    wait = awaited(compose)
    by_replica = {p.replica: p for p in procs}
    addresses = [f"127.0.0.1:{topo.port(c, 50051)}" for c in CANDIDATES]
    children: list[psutil.Process] = []
    try:
        for p in procs:
            _start(p, tmp_path)
            assert p.popen is not None
            if wait.get(p.service) == completed:  # the one-shot certificate service
                assert p.popen.wait(timeout=60) == 0, (tmp_path / f"{p.replica}.log").read_text()
            elif wait.get(p.service) == healthy:
                wait_for(lambda p=p: _healthy(p, tmp_path), 60, f"{p.replica}'s healthcheck")
            if p.replica == "leader-1-1":
                _enrol_admin(topo, addresses[0])
        # The candidates share the cluster CA the one-shot service made.
        ca = {(topo.root / "volumes" / f"leader-{n}-state" / "pki" / "ca.pem").read_bytes()
              for n in (1, 2, 3)}  # fmt: skip
        assert len(ca) == 1
        for p in procs:
            if p.healthcheck is not None:
                wait_for(lambda p=p: _healthy(p, tmp_path), 90, f"{p.replica}'s healthcheck")
        gateway = by_replica["gateway-1"]
        assert gateway.popen is not None
        children = psutil.Process(gateway.popen.pid).children()
        assert len(children) == 2  # the two simulators the gateway's shell started
        job = tmp_path / "job.toml"
        job.write_text(JOB.replace("rounds = 40", f"rounds = {ROUNDS}"))
        # To a candidate that may be a standby: it names the root, and `eddl` follows.
        done = eddl("submit", str(job), "--leader", addresses[1], "--json")
        assert done.returncode == 0, done.stderr
        before = _wait_status(
            addresses,
            lambda s: s["state"] == "running" and s["model_version"] >= 3,
            120,
            "progress",
        )
        nodes = {n["node_id"] for n in before["nodes"]}
        assert {"gateway.mcu0", "gateway.mcu1"} <= nodes
        assert len([n for n in nodes if not n.startswith("gateway")]) == WORKERS
        # Kill the root's process mid-job: a standby takes over and the job goes on.
        root = before["root"]["address"]
        dead = CANDIDATES[addresses.index(root)]
        popen = by_replica[dead].popen
        assert popen is not None
        os.kill(popen.pid, signal.SIGKILL)
        popen.wait(timeout=10)
        alive = [a for a in addresses if a != root]
        done = _wait_status(
            alive, lambda s: s["state"] not in ("running", "ending"), 240, "the job to finish"
        )
        assert done["state"] == "completed", done
        assert done["root"]["address"] in alive and done["term"] > before["term"]
        assert done["model_version"] >= before["model_version"]  # versions only increase
        assert eddl("health", alive[0]).returncode == 0
    finally:
        for p in reversed(procs):  # dependants first: workers and the gateway leave cleanly
            _stop(p)
        for child in children:
            if child.is_running():
                child.terminate()
        psutil.wait_procs(children, timeout=10)
        deadline = time.monotonic() + 5
        while any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children):
            assert time.monotonic() < deadline
            time.sleep(0.1)
