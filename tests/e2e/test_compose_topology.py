"""compose.yaml is valid Compose, and its topology, run as processes, trains a job to the end.

See :mod:`tests.e2e.compose_procs` for how containers become processes. What this cannot run:
the image build (the Dockerfile) and Docker's own networking; docs/compose.md says so.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from eddl.mcu.build import FirmwareError
from eddl.mcu.launch import sim_binary
from tests.e2e.compose_procs import ServiceProcess, Topology, load_compose, plan, read_env_file
from tests.e2e.procs import eddl, status, wait_done, wait_for
from tests.e2e.test_ops_daemons import submit

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 3


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


def _healthy(p: ServiceProcess) -> bool:
    """Run the service's healthcheck as Compose would, in the service's environment."""
    assert p.healthcheck is not None and p.popen is not None
    assert p.popen.poll() is None, f"{p.replica} exited with {p.popen.returncode}"
    argv = [shutil.which(p.healthcheck[0], path=p.env["PATH"]) or "", *p.healthcheck[1:]]
    done = subprocess.run(argv, env=p.env, capture_output=True, timeout=30, check=False)
    return done.returncode == 0


def _enrol_admin(topo: Topology, address: str) -> None:
    """What the compose.yaml header tells an operator: an admin token, then `eddl enrol`."""
    state = topo.root / "volumes" / "leader-state"
    done = eddl("token", "create", "--state-dir", str(state), "--role", "admin")
    assert done.returncode == 0, done.stderr
    bootstrap = f"127.0.0.1:{topo.port('leader-1', 50052)}"
    done = eddl("enrol", done.stdout.strip(), "--leader", address, "--bootstrap", bootstrap)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_the_compose_topology_trains_a_job_as_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDDL_CONFIG_DIR", str(tmp_path / "admin"))
    try:
        sim = sim_binary()
    except FirmwareError as exc:
        pytest.skip(f"cannot build the MCU simulator: {exc}")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "eddl-mcu-sim").symlink_to(sim)
    env = read_env_file(ROOT / ".env.example")
    compose = load_compose(ROOT / "compose.yaml", env)
    topo = Topology(list(compose["services"]), tmp_path)
    procs = plan(compose, topo, {"worker": WORKERS}, [bin_dir, Path(sys.executable).parent])
    assert [p.replica for p in procs] == [
        "leader-1",
        *(f"worker-{i}" for i in range(1, WORKERS + 1)),
        "gateway-1",
    ]
    leader = procs[0]
    address = f"127.0.0.1:{topo.port('leader-1', 50051)}"
    children: list[psutil.Process] = []
    try:
        for p in procs:
            with (tmp_path / f"{p.replica}.log").open("wb") as log:
                p.popen = subprocess.Popen(
                    p.argv, env=p.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            if p is leader:  # depends_on: condition: service_healthy
                wait_for(lambda: _healthy(leader), 60, "the leader's healthcheck")
                _enrol_admin(topo, address)
        for p in procs:
            wait_for(lambda p=p: _healthy(p), 90, f"{p.replica}'s healthcheck")
        gateway = procs[-1]
        assert gateway.popen is not None
        children = psutil.Process(gateway.popen.pid).children()
        assert len(children) == 2  # the two simulators the gateway's shell started
        submit(tmp_path, address)
        done = wait_done(address, within=150)
        assert done["state"] == "completed", done
        nodes = {n["node_id"]: n for n in status(address)["nodes"]}
        assert {"gateway.mcu0", "gateway.mcu1"} <= set(nodes)
        workers = [n for n in nodes if not n.startswith("gateway")]
        assert len(workers) == WORKERS
        assert eddl("health", address).returncode == 0
    finally:
        for p in [*procs[1:], procs[0]]:  # workers and gateway first: they leave cleanly
            if p.popen is not None and p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
                try:
                    p.popen.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.popen.kill()
                    p.popen.wait(timeout=10)
        for child in children:
            if child.is_running():
                child.terminate()
        psutil.wait_procs(children, timeout=10)
        deadline = time.monotonic() + 5
        while any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children):
            assert time.monotonic() < deadline
            time.sleep(0.1)
