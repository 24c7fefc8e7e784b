"""End to end: a leader, 2 Python workers and a gateway with 2 QEMU microcontrollers.

Every part is a real process: ``eddl-leader``, two ``eddl-worker`` daemons training with the
numpy reference, one ``eddl-worker --mcu URL --mcu URL`` gateway, and two
``qemu-system-arm -M mps2-an385`` boards running the firmware built for a Cortex-M3 with 64 KB
of RAM (53,248-byte arena).

The job is TIFeD on digits, 64-32-10: 8x8 inputs because a 784-input network leaves room for
only 3 hidden units in that arena (docs/benchmarks.md); 64-32-10 with mini-batches of 25 and
a 250-sample buffer takes about 35 KB.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eddl.mcu.launch import Launched, qemu_available, qemu_image, start_qemu
from tests.e2e.procs import (
    Proc,
    eddl,
    start_leader,
    start_worker,
    status,
    stop_all,
    wait_done,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.qemu, pytest.mark.timeout(300)]

BOARD = "ram64"
JOB = """
[job]
dataset = "digits"
algorithm = "{algorithm}"
aggregation = "sync"
task_seconds = 1.0
round_deadline = 60.0
min_task_samples = 25
max_epochs = 100.0
{stop}
[job.model]
sizes = [64, 32, 10]
[job.hyper]
lr_inv = 2048
batch_size = 25
"""


@pytest.fixture(scope="module")
def board_image() -> Path:
    if not qemu_available():
        pytest.skip("SKIPPED LOUDLY: qemu-system-arm / arm-none-eabi-gcc not installed")
    return qemu_image(BOARD, build=True)


@pytest.fixture
def boards(board_image: Path) -> Iterator[list[Launched]]:
    launched = [start_qemu(BOARD, image=board_image, lifetime=280.0) for _ in range(2)]
    try:
        yield launched
    finally:
        for board in launched:
            board.close()


def _cluster(tmp: Path, boards: list[Launched]) -> tuple[list[Proc], str]:
    leader, address = start_leader(tmp, heartbeat=0.3)
    procs = [leader]
    procs += [start_worker(tmp, address, f"py{i}") for i in range(2)]
    mcu_flags = [flag for b in boards for flag in ("--mcu", b.url)]
    procs.append(start_worker(tmp, address, "gw", extra=mcu_flags))
    wait_for(lambda: len(status(address)["nodes"]) == 4, 90, "2 workers + 2 MCUs", step=0.3)
    return procs, address


def _submit(tmp: Path, address: str, algorithm: str, stop: str) -> str:
    path = tmp / f"{algorithm}.toml"
    path.write_text(JOB.format(algorithm=algorithm, stop=stop))
    done = eddl("submit", str(path), "--leader", address, "--json")
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["job_id"])


def _pushed(gateway: Proc, node: str) -> list[dict[str, Any]]:
    return [e for e in gateway.lines() if e.get("event") == "update pushed" and e["node"] == node]


def _stop_all(procs: list[Proc]) -> None:
    stop_all(procs)


@pytest.mark.parametrize(("algorithm", "target"), [("tifed", 0.9), ("tifed-single", 0.85)])
def test_python_workers_and_qemu_mcus_train_tifed(
    tmp_path: Path, boards: list[Launched], algorithm: str, target: float
) -> None:
    procs, address = _cluster(tmp_path, boards)
    try:
        nodes = {n["node_id"]: n for n in status(address)["nodes"]}
        for mcu in ("gw.mcu0", "gw.mcu1"):
            assert nodes[mcu]["role"] == "mcu", nodes[mcu]
        _submit(tmp_path, address, algorithm, f"target_accuracy = {target}")
        final = wait_done(address, 200)
        assert final["state"] == "completed", final
        assert final["accuracy"] >= target
        gateway = procs[-1]
        for mcu in ("gw.mcu0", "gw.mcu1"):
            pushed = _pushed(gateway, mcu)
            assert pushed, f"{mcu} pushed no update"
            assert all(e["link_s"] > 0 for e in pushed)
        assert gateway.stop() == 0
    finally:
        _stop_all(procs)


def test_killed_mcu_task_is_reassigned_and_the_board_rejoins(
    tmp_path: Path, boards: list[Launched]
) -> None:
    procs, address = _cluster(tmp_path, boards)
    gateway = procs[-1]
    try:
        job_id = _submit(tmp_path, address, "tifed", "rounds = 30")

        def mcu0_training() -> bool:
            # From the gateway's own log (read in a few ms; `eddl status` takes longer than a
            # board's task under load): gw.mcu0 started a task and has not pushed it yet.
            lines = gateway.lines()
            started = [
                e["task"] for e in lines if e.get("event") == "task" and e.get("node") == "gw.mcu0"
            ]
            pushed = {e["task"] for e in _pushed(gateway, "gw.mcu0")}
            return bool(started) and started[-1] not in pushed

        wait_for(mcu0_training, 60, "gw.mcu0 to be training a task", step=0.02)
        victim = boards[0]
        port = int(victim.url.rsplit(":", 1)[1])
        victim.proc.kill()
        victim.close()

        def mcu0_state() -> str:
            rows = {n["node_id"]: n for n in status(address)["nodes"]}
            return str(rows.get("gw.mcu0", {}).get("state", "absent"))

        wait_for(lambda: mcu0_state() != "alive", 30, "the gateway to report gw.mcu0 gone")
        pushed_before = len(_pushed(gateway, "gw.mcu0"))
        boards[0] = start_qemu(BOARD, lifetime=200.0, port=port)
        wait_for(
            lambda: mcu0_state() == "alive" and len(_pushed(gateway, "gw.mcu0")) > pushed_before,
            90,
            "the restarted board to rejoin and train",
            step=0.3,
        )
        final = wait_done(address, 200)
        assert final["state"] == "completed", final
        done = eddl("watch", "--job", job_id, "--leader", address, timeout=30)
        assert "task_requeued" in done.stdout, done.stdout
        lost = [e for e in gateway.lines() if e.get("event") == "device lost"]
        assert lost and lost[0]["node"] == "gw.mcu0"
        found = [e for e in gateway.lines() if e.get("event") == "device found"]
        assert sum(1 for e in found if e["node"] == "gw.mcu0") == 2
    finally:
        _stop_all(procs)


@pytest.mark.parametrize("kind", ["host", pytest.param("qemu", marks=pytest.mark.qemu)])
def test_eddl_local_with_emulated_mcus(tmp_path: Path, kind: str) -> None:
    if kind == "qemu" and not qemu_available():
        pytest.skip("SKIPPED LOUDLY: qemu-system-arm / arm-none-eabi-gcc not installed")
    done = eddl(
        "local",
        "--workers",
        "2",
        "--mcu",
        "2",
        "--mcu-kind",
        kind,
        "--json",
        "--state-dir",
        str(tmp_path),
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["state"] == "completed" and result["accuracy"] >= 0.9
    assert result["mcus"] == 2
    assert set(result["exit_codes"]) == {"leader", "worker-0", "worker-1", "gateway"}
    assert set(result["exit_codes"].values()) == {0}, result["exit_codes"]
    gateway = (tmp_path / "logs" / "gateway.log").read_text()
    for node in ("gateway.mcu0", "gateway.mcu1"):
        assert f'"node": "{node}"' in gateway and "device found" in gateway


def test_eddl_local_refuses_bad_mcu_options() -> None:
    done = eddl("local", "--mcu", "-1", timeout=30)
    assert done.returncode == 2 and "--mcu" in done.stderr
    done = eddl("local", "--mcu", "1", "--mcu-kind", "qemu", "--mcu-baud", "9600", timeout=30)
    assert done.returncode == 2 and "--mcu-baud" in done.stderr
    done = eddl("local", "--mcu", "1", "--mcu-baud", "0", timeout=30)
    assert done.returncode == 2 and "--mcu-baud" in done.stderr
