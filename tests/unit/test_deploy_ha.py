"""deploy/'s high-availability files stay in step with the daemons and with etcd: the example
candidate and worker configs load, the etcd environment names only flags etcd knows, and
``systemd-analyze verify`` accepts the etcd unit next to the leader's."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from eddl.config import load_config
from eddl.leader.config import LeaderConfig
from eddl.leader.etcd import parse_coordinator
from eddl.worker.config import WorkerConfig
from tests.unit.test_deploy import _SYSTEM_UNITS, _installed_root

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ETCD = shutil.which("etcd")


def _env(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def test_the_candidate_config_loads_with_a_coordinator_and_an_address() -> None:
    config = load_config(
        LeaderConfig,
        "leader",
        DEPLOY / "ha" / "leader-candidate.toml",
        environ={"EDDL_LEADER_JOIN_TOKEN": "secret"},
    )
    assert len(parse_coordinator(config.coordinator)) == 3
    assert config.advertise and config.min_replicas == 1
    workers = load_config(
        WorkerConfig,
        "worker",
        DEPLOY / "ha" / "worker.toml",
        environ={"EDDL_WORKER_JOIN_TOKEN": "s"},
    )
    assert len(workers.leaders) == 3


def test_the_etcd_members_of_both_examples_agree() -> None:
    env = _env(DEPLOY / "ha" / "etcd.env.example")
    members = dict(m.split("=", 1) for m in env["ETCD_INITIAL_CLUSTER"].split(","))
    assert env["ETCD_NAME"] in members
    assert members[env["ETCD_NAME"]] == env["ETCD_INITIAL_ADVERTISE_PEER_URLS"]
    config = load_config(
        LeaderConfig, "leader", DEPLOY / "ha" / "leader-candidate.toml",
        environ={"EDDL_LEADER_JOIN_TOKEN": "secret"},
    )  # fmt: skip
    clients = {u.removeprefix("http://") for u in env["ETCD_ADVERTISE_CLIENT_URLS"].split(",")}
    assert clients <= {e.removeprefix("http://") for e in parse_coordinator(config.coordinator)}


@pytest.mark.skipif(ETCD is None, reason="needs etcd")
def test_every_etcd_variable_is_a_flag_etcd_knows() -> None:
    assert ETCD is not None
    done = subprocess.run([ETCD, "--help"], capture_output=True, text=True, timeout=30, check=False)
    help_text = done.stdout + done.stderr
    for key in _env(DEPLOY / "ha" / "etcd.env.example"):
        flag = "--" + key.removeprefix("ETCD_").lower().replace("_", "-")
        assert f"{flag} " in help_text or f"{flag}\n" in help_text, flag
    assert "--bogus-key " not in help_text  # the check can fail


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.skipif(_SYSTEM_UNITS is None, reason="needs systemd's unit directory")
@pytest.mark.skipif(ETCD is None, reason="needs etcd")
def test_systemd_analyze_verify_accepts_the_etcd_unit(tmp_path: Path) -> None:
    assert ETCD is not None
    _installed_root(tmp_path)
    (tmp_path / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(ETCD, tmp_path / "usr/bin/etcd")
    units = tmp_path / "etc/systemd/system"
    shutil.copy2(DEPLOY / "systemd" / "eddl-etcd.service", units / "eddl-etcd.service")
    with (tmp_path / "etc/passwd").open("a") as f:
        f.write("etcd:x:998:998::/var/lib/etcd:/usr/sbin/nologin\n")
    with (tmp_path / "etc/group").open("a") as f:
        f.write("etcd:x:998:\n")
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={tmp_path}", "eddl-etcd.service",
         "eddl-leader.service"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    printed = (done.stdout + done.stderr).strip()
    assert done.returncode == 0 and printed == "", printed
