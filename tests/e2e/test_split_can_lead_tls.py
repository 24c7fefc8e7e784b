"""End to end over mutual TLS, workers started with ``--can-lead`` lead groups: a root
(``--split auto``, mTLS) and eight workers enrolled with worker tokens, two of them with
``--can-lead``, no sub-leader daemon. The two offer their groups with their worker
certificates; no sub-leader certificate exists until the root promotes them. Then each gets a
token of role subleader for ``<node>.lead`` on its heartbeat reply, enrols its sub-leader at the
bootstrap port and serves its group over mTLS; the members join there with their worker
certificates, both groups answer the root's tasks, a member revoked at the root is refused by
its group, and the job completes with every sample counted once."""

from __future__ import annotations

from pathlib import Path

import pytest

from eddl.data.datasets import load_dataset
from eddl.security.tls import Identity
from tests.e2e.procs import Proc, eddl, start_leader, start_worker, token, wait_done, wait_for
from tests.e2e.test_split_can_lead_e2e import LEADS, promoted_groups, wait_groups_served
from tests.e2e.test_split_demote_e2e import SPLIT, THROTTLE, submit_plain
from tests.e2e.test_subleader_e2e import procs
from tests.ports import free_port

__all__ = ["procs"]  # the fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

EPOCHS = 120.0  # long enough to split whatever the load: the workers train 40x slowed down


def test_can_lead_workers_over_mtls_get_a_sub_leader_certificate_only_when_promoted(
    tmp_path: Path, procs: list[Proc], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDDL_CONFIG_DIR", str(tmp_path / "admin"))
    state = tmp_path / "state"
    boot_file = tmp_path / "bootstrap.port"
    extra = [*SPLIT, "--bootstrap-port-file", str(boot_file)]
    root, address = start_leader(tmp_path, state_dir=state, insecure=False, extra=extra)
    procs.append(root)
    wait_for(lambda: boot_file.exists() and boot_file.read_text().strip().isdigit(), 30, "boot")
    bootstrap = f"127.0.0.1:{int(boot_file.read_text())}"
    done = eddl("enrol", token(state, "admin"), "--leader", address, "--bootstrap", bootstrap)
    assert done.returncode == 0, done.stderr

    workers: dict[str, Proc] = {}
    lead_at = {w: f"127.0.0.1:{free_port()}" for w in LEADS}
    for i in range(8):
        name = f"w{i}"
        extra = [
            "--pki-dir", str(tmp_path / name), "--bootstrap", bootstrap,
            "--enrol-token", token(state, "worker"),
        ]  # fmt: skip
        if name in LEADS:
            extra += ["--can-lead", lead_at[name]]
        workers[name] = start_worker(
            tmp_path, address, name, throttle=THROTTLE, extra=extra, insecure=False
        )
    procs.extend(workers.values())
    # The offers come from the workers' own joins; no sub-leader certificate exists yet.
    wait_for(lambda: len(root.events("lead offered")) == 2, 60, "two lead offers")
    offered = {str(e["node"]): str(e["address"]) for e in root.events("lead offered")}
    assert offered == {f"{w}.lead": lead_at[w] for w in LEADS}, offered
    assert not root.events("lead token made")
    assert not any((tmp_path / w / "lead").exists() for w in LEADS)
    job_id = submit_plain(tmp_path, address, EPOCHS)

    groups, _ = promoted_groups(root)

    # Promoted: each can-lead worker got a token for its own sub-leader only, enrolled it
    # with role subleader and serves its group.
    wait_for(lambda: all(workers[w].events("leading a group") for w in LEADS), 60, "leading")
    made = {str(e["node"]): str(e["sub_leader"]) for e in root.events("lead token made")}
    assert made == {w: f"{w}.lead" for w in LEADS}, made
    for w in LEADS:
        info = Identity.load(tmp_path / w / "lead").info
        assert (info.node_id, info.role) == (f"{w}.lead", "subleader")

    wait_groups_served(workers, groups, {f"{w}.lead": lead_at[w] for w in LEADS}, within=90)

    # Revocations reach the workers' sub-leaders: a member revoked at the root is refused by
    # its group.
    revoked = next(w for g in groups.values() for w in g if w not in LEADS)
    done = eddl("node", "revoke", revoked, "--state-dir", str(state))
    assert done.returncode == 0, done.stderr
    wait_for(
        lambda: "UNAUTHENTICATED" in workers[revoked].log.read_text(), 60, f"{revoked} refused"
    )
    lists = "revocation list received"
    for w in LEADS:
        got = workers[w].events(lists)
        assert got and int(got[-1]["revoked"]) >= 1, (w, got)

    final = wait_done(address, within=300)
    assert final["state"] == "completed", final
    assert final["job_id"] == job_id
    assert final["samples_trained"] == EPOCHS * len(load_dataset("digits").y_train)
    work = final["detail"]["work"]
    assert work["w0.lead"]["tasks"] >= 2 and work["w1.lead"]["tasks"] >= 2
