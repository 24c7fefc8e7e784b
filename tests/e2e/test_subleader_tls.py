"""End to end over mutual TLS: a sub-leader enrolled with a token of role ``subleader`` trains
its group's share of a job, its members reach it with their worker certificates (two without
local data fetch their samples through it), and when it is killed they return to the root over
mTLS; a sub-leader enrolled as a worker is refused at
start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eddl.data.datasets import load_dataset
from tests.e2e.procs import (
    Proc,
    eddl,
    script,
    spawn,
    start_leader,
    start_sub_leader,
    start_worker,
    token,
    wait_done,
    wait_for,
)
from tests.e2e.test_subleader_e2e import JOB, procs

__all__ = ["procs"]  # the fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_a_sub_leader_over_mtls_trains_its_group_and_its_members_return_to_the_root(
    tmp_path: Path, procs: list[Proc], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDDL_CONFIG_DIR", str(tmp_path / "admin"))
    state = tmp_path / "state"
    boot_file = tmp_path / "bootstrap.port"
    root, address = start_leader(
        tmp_path,
        state_dir=state,
        insecure=False,
        extra=["--bootstrap-port-file", str(boot_file)],
    )
    procs.append(root)
    wait_for(lambda: boot_file.exists() and boot_file.read_text().strip().isdigit(), 30, "boot")
    bootstrap = f"127.0.0.1:{int(boot_file.read_text())}"

    # A token of role worker does not make a sub-leader: it exits with a clear error.
    argv = [
        script("eddl-leader"), "--upstream", address, "--leader-id", "sub-wrong",
        "--pki-dir", str(tmp_path / "sub-wrong"), "--bootstrap", bootstrap,
        "--enrol-token", token(state, "worker"), "--bind", "127.0.0.1:0",
    ]  # fmt: skip
    wrong = spawn("sub-wrong", argv, tmp_path / "sub-wrong.log")
    procs.append(wrong)
    assert wrong.popen.wait(timeout=60) == 2
    assert "needs one of role 'subleader'" in wrong.log.read_text()

    extra = [
        "--pki-dir", str(tmp_path / "sub-1"), "--bootstrap", bootstrap,
        "--enrol-token", token(state, "subleader"),
    ]  # fmt: skip
    sub, sub_address = start_sub_leader(tmp_path, address, "sub-1", insecure=False, extra=extra)
    procs.append(sub)
    members = [f"w{j}" for j in range(3)]
    for node, leader in [*((m, sub_address) for m in members), ("r0", address)]:
        extra = [
            "--pki-dir", str(tmp_path / node), "--bootstrap", bootstrap,
            "--enrol-token", token(state, "worker"),
        ]  # fmt: skip
        if node in ("w0", "w1"):  # no local data: samples come through the group
            extra.append("--no-local-data")
        procs.append(start_worker(tmp_path, leader, node, extra=extra, insecure=False))
    done = eddl("enrol", token(state, "admin"), "--leader", address, "--bootstrap", bootstrap)
    assert done.returncode == 0, done.stderr
    job = tmp_path / "job.toml"
    job.write_text(JOB.format(epochs=2.0))
    done = eddl("submit", str(job), "--leader", address, "--json")
    assert done.returncode == 0, done.stderr
    job_id = str(json.loads(done.stdout)["job_id"])

    # The group trains over mTLS: its members joined the sub-leader, which answers the root.
    wait_for(lambda: len(sub.events("upstream task answered")) >= 2, 120, "group answers")
    # The members without data fetched their samples from the sub-leader, which fetched each
    # from the root once for both of them.
    last = sub.events("upstream task answered")[-1]
    served, fetched = int(str(last["samples_served"])), int(str(last["samples_fetched"]))
    assert 0 < fetched <= served, last
    workers = {p.name: p for p in procs if p.name in members}
    for name, worker in workers.items():
        joined = worker.events("joined")
        assert joined and joined[0].get("leader") == sub_address, (name, joined)
    sub.kill9()

    def home(worker: Proc) -> bool:
        return any(line.get("leader") == address for line in worker.events("joined"))

    wait_for(lambda: all(home(w) for w in workers.values()), 60, "members back at the root")
    final = wait_done(address, within=200)
    assert final["state"] == "completed", final
    assert final["job_id"] == job_id
    assert final["samples_trained"] == 2 * len(load_dataset("digits").y_train)
    work = final["detail"]["work"]
    assert work["sub-1"]["tasks"] >= 2
