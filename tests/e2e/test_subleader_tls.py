"""End to end over mutual TLS: a sub-leader enrolled with a token of role ``subleader`` trains
its group's share of a job, its members reach it with their worker certificates (two without
local data fetch their samples through it), and when it is killed they return to the root over
mTLS; a sub-leader enrolled as a worker is refused at start. With short-lived certificates a
sub-leader renews its own while its group trains, and refuses a member revoked at the root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eddl.data.datasets import load_dataset
from eddl.security import pki
from eddl.security.authority import Authority
from eddl.security.tls import Identity
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


LIFETIME_S = 6.0  # every certificate the root issues here: renewed about every 4 s


def _serial(directory: Path) -> int:
    return Identity.load(directory).info.serial


def test_a_sub_leader_renews_its_certificate_and_refuses_a_member_revoked_at_the_root(
    tmp_path: Path, procs: list[Proc], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real processes, certificates of LIFETIME_S: the sub-leader's serial changes while its
    group trains (its members renew at the root); a member revoked with `eddl node revoke` on
    the root's host is refused by the sub-leader, and the others keep training."""
    monkeypatch.setenv("EDDL_CONFIG_DIR", str(tmp_path / "admin"))
    state = tmp_path / "state"
    boot_file = tmp_path / "bootstrap.port"
    extra = ["--bootstrap-port-file", str(boot_file), "--cert-lifetime", str(LIFETIME_S)]
    root, address = start_leader(tmp_path, state_dir=state, insecure=False, extra=extra)
    procs.append(root)
    wait_for(lambda: boot_file.exists() and boot_file.read_text().strip().isdigit(), 30, "boot")
    bootstrap = f"127.0.0.1:{int(boot_file.read_text())}"
    # The eddl command's certificate outlives the job (issued on the root's host).
    key = pki.new_key()
    ca = Authority(state / "pki")
    admin = ca.issue(pki.make_csr(key, "ops"), "admin", lifetime_s=3600)
    Identity(pki.key_pem(key), admin.cert_pem, ca.ca_pem).save(tmp_path / "admin")

    sub_dir = tmp_path / "sub-1"
    extra = [
        "--pki-dir", str(sub_dir), "--bootstrap", bootstrap,
        "--enrol-token", token(state, "subleader"),
    ]  # fmt: skip
    sub, sub_address = start_sub_leader(tmp_path, address, "sub-1", insecure=False, extra=extra)
    procs.append(sub)
    first_serial = _serial(sub_dir)
    members = [f"w{j}" for j in range(3)]
    for node in members:
        extra = [
            "--pki-dir", str(tmp_path / node), "--bootstrap", bootstrap,
            "--enrol-token", token(state, "worker"),
        ]  # fmt: skip
        procs.append(start_worker(tmp_path, sub_address, node, extra=extra, insecure=False))
    job = tmp_path / "job.toml"
    job.write_text(JOB.format(epochs=1000.0))
    done = eddl("submit", str(job), "--leader", address, "--json")
    assert done.returncode == 0, done.stderr
    workers = {p.name: p for p in procs if p.name in members}

    # Two renewals of the sub-leader while its group trains (the second closes the first
    # renewal's old channel), its group answering tasks across them, and its members renewed
    # too (at the root).
    wait_for(lambda: len(sub.events("upstream task answered")) >= 1, 60, "a first answer")
    renewed, serial = len(sub.events("certificate renewed")), _serial(sub_dir)
    wait_for(lambda: len(sub.events("certificate renewed")) >= renewed + 2, 60, "renewals")
    assert _serial(sub_dir) not in (serial, first_serial)
    answers = len(sub.events("upstream task answered"))
    wait_for(lambda: len(sub.events("upstream task answered")) >= answers + 2, 60, "answers")
    for name, worker in workers.items():
        wait_for(lambda w=worker: bool(w.events("certificate renewed")), 30, f"{name} renewed")
        joined = worker.events("joined")
        assert joined and all(j.get("leader") == sub_address for j in joined), (name, joined)

    # Revoked at the root: refused by the sub-leader from its next call on.
    done = eddl("node", "revoke", "w2", "--state-dir", str(state))
    assert done.returncode == 0, done.stderr
    wait_for(
        lambda: any(e.get("node") == "w2" for e in sub.events("member gone")), 30, "w2 dropped"
    )
    wait_for(lambda: "UNAUTHENTICATED" in workers["w2"].log.read_text(), 30, "w2 refused")
    pushed = {n: len(workers[n].events("update pushed")) for n in ("w0", "w1")}
    answers = len(sub.events("upstream task answered"))
    wait_for(lambda: len(sub.events("upstream task answered")) >= answers + 2, 60, "answers")
    for name in ("w0", "w1"):
        wait_for(
            lambda n=name: len(workers[n].events("update pushed")) > pushed[n],
            30,
            f"{name} trains",
        )
    assert root.alive and sub.alive
