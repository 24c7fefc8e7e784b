"""deploy/ stays in step with the daemons: configs load, units pass only known flags."""

from __future__ import annotations

import configparser
import shlex
import tomllib
from pathlib import Path

import pytest

from eddl.config import load_config
from eddl.leader.config import LeaderConfig
from eddl.leader.main import build_parser as leader_parser
from eddl.worker.config import WorkerConfig
from eddl.worker.main import build_parser as worker_parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ROLES = {
    "leader": (LeaderConfig, leader_parser),
    "worker": (WorkerConfig, worker_parser),
}


def _env_file(role: str) -> dict[str, str]:
    env = {}
    for line in (DEPLOY / "systemd" / f"{role}.env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def _unit(role: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((DEPLOY / "systemd" / f"eddl-{role}.service").read_text())
    return unit


@pytest.mark.parametrize("role", sorted(ROLES))
def test_example_config_and_env_load_through_the_config_class(role: str) -> None:
    cls, _ = ROLES[role]
    env = _env_file(role)
    assert all(k.startswith(f"EDDL_{role.upper()}_") for k in env)
    config = load_config(cls, role, DEPLOY / "config" / f"{role}.toml", environ=env)
    assert config.join_token  # the secret came from the environment file
    table = tomllib.loads((DEPLOY / "config" / f"{role}.toml").read_text())[role]
    assert "join_token" not in table and "admin_token" not in table


@pytest.mark.parametrize("role", sorted(ROLES))
def test_unit_runs_the_daemon_with_flags_it_knows(role: str) -> None:
    _, parser = ROLES[role]
    service = _unit(role)["Service"]
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0]).name == f"eddl-{role}"
    scripts = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]["scripts"]
    assert f"eddl-{role}" in scripts
    args = parser().parse_args(argv[1:])  # exits (fails the test) on an unknown flag
    assert args.config == f"/etc/eddl/{role}.toml"
    assert service["KillSignal"] == "SIGTERM"
    assert service["EnvironmentFile"].lstrip("-") == f"/etc/eddl/{role}.env"
    assert service["User"] == "eddl"
