"""End to end over mutual TLS: tokens from the CLI, enrolment, renewal while training runs,
for workers and for a gateway whose QEMU microcontroller acts under the gateway's certificate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from eddl.mcu.launch import Launched, qemu_available, qemu_image, start_qemu
from eddl.security import pki
from eddl.security.authority import Authority
from eddl.security.tls import Identity
from tests.e2e.procs import Proc, eddl, start_leader, start_worker, token, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

LIFETIME_S = 6.0  # renewed at two thirds: every 4 s
JOB = """
[job]
dataset = "digits"
algorithm = "sgd"
aggregation = "async"
task_seconds = 0.3
rounds = 1000000
max_epochs = 100000.0
[job.model]
sizes = [64, 16, 10]
activations = ["tanh", "sigmoid"]
loss = "bce"
[job.hyper]
lr = 0.1
batch_size = 8
"""


MCU_JOB = """
[job]
dataset = "digits"
algorithm = "tifed"
aggregation = "sync"
task_seconds = 1.0
round_deadline = 10.0
min_task_samples = 25
rounds = 1000000
max_epochs = 100000.0
[job.model]
sizes = [64, 32, 10]
[job.hyper]
lr_inv = 2048
batch_size = 25
"""


def _events(proc: Proc, name: str, node: str | None = None) -> int:
    return sum(
        1
        for line in proc.lines()
        if line.get("event") == name and (node is None or line.get("node") == node)
    )


def _mtls_leader(tmp_path: Path) -> tuple[Proc, str, str]:
    """A leader on mTLS whose certificates live LIFETIME_S; its address and bootstrap port."""
    boot_file = tmp_path / "bootstrap.port"
    leader, address = start_leader(
        tmp_path,
        state_dir=tmp_path / "state",
        insecure=False,
        extra=["--cert-lifetime", str(LIFETIME_S), "--bootstrap-port-file", str(boot_file)],
    )
    try:
        wait_for(lambda: boot_file.exists() and boot_file.read_text().strip().isdigit(), 30, "boot")
    except BaseException:
        leader.stop()
        raise
    return leader, address, f"127.0.0.1:{int(boot_file.read_text())}"


def _submit(tmp_path: Path, address: str, spec: str) -> None:
    job = tmp_path / "job.toml"
    job.write_text(spec)
    done = eddl("submit", str(job), "--leader", address, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["job_id"]


def _admin_from_state(tmp_path: Path) -> None:
    """An hour-long admin certificate from the CA on the leader's host, as `eddl local` makes
    its own: the job outlives the LIFETIME_S ones, and a loaded machine (QEMU) may take longer
    than that between `eddl enrol` and `eddl submit`."""
    key = pki.new_key()
    authority = Authority(tmp_path / "state" / "pki")
    issued = authority.issue(pki.make_csr(key, "ops"), "admin", lifetime_s=3600)
    Identity(pki.key_pem(key), issued.cert_pem, authority.ca_pem).save(tmp_path / "admin")


def test_certificates_are_renewed_while_the_daemons_run_and_training_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDDL_CONFIG_DIR", str(tmp_path / "admin"))
    state = tmp_path / "state"
    leader, address, bootstrap = _mtls_leader(tmp_path)
    procs = [leader]
    try:
        for i in range(2):
            extra = [
                "--pki-dir", str(tmp_path / f"w{i}"), "--bootstrap", bootstrap,
                "--enrol-token", token(state, "worker"),
            ]  # fmt: skip
            procs.append(start_worker(tmp_path, address, f"w{i}", extra=extra, insecure=False))
        done = eddl("enrol", token(state, "admin"), "--leader", address, "--bootstrap", bootstrap)
        assert done.returncode == 0, done.stderr
        _submit(tmp_path, address, JOB)
        workers = procs[1:]

        def renewed_twice() -> bool:
            for w in workers:
                assert w.alive(), w.log.read_text()[-2000:]
            return all(_events(w, "certificate renewed") >= 2 for w in workers)

        wait_for(renewed_twice, 60, "two renewals on each worker", step=0.5)
        pushed = {w.name: _events(w, "update pushed") for w in workers}
        assert all(n > 0 for n in pushed.values()), pushed
        # Past the first certificates' expiry, and still training under the renewed ones.
        wait_for(
            lambda: all(_events(w, "update pushed") >= pushed[w.name] + 3 for w in workers),
            60,
            "updates pushed after the renewals",
            step=0.5,
        )
        assert all(w.alive() for w in workers)
        assert _events(leader, "certificate renewed") >= 4
        refused = [line for line in leader.lines() if "expired" in str(line.get("error", ""))]
        assert refused == []
    finally:
        for p in reversed(procs):
            p.stop()


@pytest.fixture
def board() -> Iterator[Launched]:
    if not qemu_available():
        pytest.skip("SKIPPED LOUDLY: qemu-system-arm / arm-none-eabi-gcc not installed")
    launched = start_qemu("ram64", image=qemu_image("ram64", build=True), lifetime=200.0)
    try:
        yield launched
    finally:
        launched.close()


@pytest.mark.qemu
def test_a_gateway_renews_while_its_mcu_trains_under_its_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, board: Launched
) -> None:
    monkeypatch.setenv("EDDL_CONFIG_DIR", str(tmp_path / "admin"))
    leader, address, bootstrap = _mtls_leader(tmp_path)
    procs = [leader]
    try:
        extra = [
            "--mcu", board.url, "--pki-dir", str(tmp_path / "gw"), "--bootstrap", bootstrap,
            "--enrol-token", token(tmp_path / "state", "gateway"),
        ]  # fmt: skip
        gateway = start_worker(tmp_path, address, "gw", extra=extra, insecure=False)
        procs.append(gateway)
        _admin_from_state(tmp_path)
        _submit(tmp_path, address, MCU_JOB)

        def mcu_pushed() -> int:
            assert gateway.alive(), gateway.log.read_text()[-2000:]
            return _events(gateway, "update pushed", "gw.mcu0")

        wait_for(lambda: mcu_pushed() > 0, 90, "a first MCU update", step=0.5)
        before = _events(gateway, "certificate renewed")
        wait_for(
            lambda: mcu_pushed() > 0 and _events(gateway, "certificate renewed") >= before + 2,
            60,
            "two renewals of the gateway while its MCU trains",
            step=0.5,
        )
        # Past the expiry of the certificate the MCU joined under, the board still trains as
        # gw.mcu0 through the gateway's renewed certificate.
        pushed = mcu_pushed()
        wait_for(lambda: mcu_pushed() >= pushed + 3, 90, "MCU updates after renewals", step=0.5)
        assert gateway.alive()
        assert _events(leader, "certificate renewed") >= 2
        refused = [line for line in leader.lines() if "expired" in str(line.get("error", ""))]
        assert refused == []
    finally:
        for p in reversed(procs):
            p.stop()
