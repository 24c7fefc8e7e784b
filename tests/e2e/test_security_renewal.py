"""End to end over mutual TLS: tokens from the CLI, enrolment, renewal while training runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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


def _events(proc: Proc, name: str) -> int:
    return sum(1 for line in proc.lines() if line.get("event") == name)


def test_certificates_are_renewed_while_the_daemons_run_and_training_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDDL_CONFIG_DIR", str(tmp_path / "admin"))
    state = tmp_path / "state"
    boot_file = tmp_path / "bootstrap.port"
    leader, address = start_leader(
        tmp_path,
        state_dir=state,
        insecure=False,
        extra=["--cert-lifetime", str(LIFETIME_S), "--bootstrap-port-file", str(boot_file)],
    )
    procs = [leader]
    try:
        wait_for(lambda: boot_file.exists() and boot_file.read_text().strip().isdigit(), 30, "boot")
        bootstrap = f"127.0.0.1:{int(boot_file.read_text())}"
        for i in range(2):
            extra = [
                "--pki-dir", str(tmp_path / f"w{i}"), "--bootstrap", bootstrap,
                "--enrol-token", token(state, "worker"),
            ]  # fmt: skip
            procs.append(start_worker(tmp_path, address, f"w{i}", extra=extra, insecure=False))
        done = eddl("enrol", token(state, "admin"), "--leader", address, "--bootstrap", bootstrap)
        assert done.returncode == 0, done.stderr
        job = tmp_path / "job.toml"
        job.write_text(JOB)
        done = eddl("submit", str(job), "--leader", address, "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["job_id"]
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
