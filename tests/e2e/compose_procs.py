"""Run compose.yaml's services as local processes: Compose's topology without containers.

No container runtime works on the test machines, so each service's ``command`` runs as a
process with its ``environment``, after Compose's variable interpolation from an env file.
Every container would have its own network namespace; here all share loopback, so addresses
are rewritten: ``0.0.0.0:P`` / ``127.0.0.1:P`` inside a replica, and ``SERVICE:P`` (Compose's
DNS name of another service), each become ``127.0.0.1:<a free port>`` allocated per replica and
container port; ``--tcp P`` (the MCU simulator's port) likewise. Named volumes become folders,
tmpfs mounts a folder per replica. Services start in the order they are listed, which
``compose.yaml`` keeps a valid order of its ``depends_on``; :func:`awaited` says what the
runner waits for after starting a service (its exit, or its healthcheck).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from tests.ports import free_port

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:\?|:-)(?P<arg>[^}]*))?\}")
_LOCAL = re.compile(r"\b(?:0\.0\.0\.0|127\.0\.0\.1):(\d+)\b")
_TCP = re.compile(r"--tcp (\d+)\b")


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` on every string inside."""
    if isinstance(value, str):

        def one(m: re.Match[str]) -> str:
            got = env.get(m["name"], "")
            if m["op"] == ":?" and not got:
                raise ValueError(f"{m['name']}: {m['arg']}")
            return got or (m["arg"] if m["op"] == ":-" else "")

        return _VAR.sub(one, value).replace("$$", "$")
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    return value


def load_compose(path: Path, env: dict[str, str]) -> dict[str, Any]:
    raw = YAML(typ="safe").load(path.read_text())
    return dict(interpolate(raw, env))


@dataclass
class Topology:
    """Ports handed out per (replica, container port), and folders per named volume."""

    services: list[str]
    root: Path
    ports: dict[tuple[str, int], int] = field(default_factory=dict)

    def port(self, replica: str, container_port: int) -> int:
        key = (replica, container_port)
        if key not in self.ports:
            self.ports[key] = free_port()
        return self.ports[key]

    def rewrite(self, text: str, replica: str, volumes: dict[str, Path]) -> str:
        # This replica's own addresses first: a service name's rewrite is a loopback address
        # already, and must not be taken for one of this replica's ports.
        text = _LOCAL.sub(lambda m: f"127.0.0.1:{self.port(replica, int(m[1]))}", text)
        for name in self.services:
            text = re.sub(
                rf"\b{re.escape(name)}:(\d+)\b",
                lambda m, n=name: f"127.0.0.1:{self.port(f'{n}-1', int(m[1]))}",
                text,
            )
        text = _TCP.sub(lambda m: f"--tcp {self.port(replica, int(m[1]))}", text)
        for target, folder in volumes.items():
            text = text.replace(target, str(folder))
        return text


@dataclass
class ServiceProcess:
    service: str
    replica: str
    argv: list[str]
    env: dict[str, str]
    healthcheck: list[str] | None
    popen: subprocess.Popen[bytes] | None = None


def plan(
    compose: dict[str, Any], topo: Topology, scale: dict[str, int], path_dirs: list[Path]
) -> list[ServiceProcess]:
    """One :class:`ServiceProcess` per replica, in the order the services are listed."""
    out = []
    for name, service in compose["services"].items():
        volumes = {}
        for mount in service.get("volumes", []):
            source, _, target = str(mount).partition(":")
            volumes[target] = topo.root / "volumes" / source
            volumes[target].mkdir(parents=True, exist_ok=True)
        for i in range(1, scale.get(name, 1) + 1):
            replica = f"{name}-{i}"
            # A tmpfs is the container's own: a folder per replica.
            mounts = dict(volumes)
            for target in service.get("tmpfs", []):
                mounts[str(target)] = topo.root / "tmpfs" / replica / str(target).strip("/")
                mounts[str(target)].mkdir(parents=True, exist_ok=True)
            env = {**os.environ, **{k: str(v) for k, v in service.get("environment", {}).items()}}
            env["PATH"] = os.pathsep.join([*map(str, path_dirs), env.get("PATH", "")])
            argv = [topo.rewrite(str(a), replica, mounts) for a in service["command"]]
            check = service.get("healthcheck", {}).get("test")
            health = None
            if check:
                assert check[0] == "CMD", check
                health = [topo.rewrite(str(a), replica, mounts) for a in check[1:]]
            out.append(ServiceProcess(name, replica, argv, env, health))
    return out


def awaited(compose: dict[str, Any]) -> dict[str, str]:
    """Service -> the ``depends_on`` condition another service starts on (``service_healthy``,
    ``service_completed_successfully``); listed services must come before their dependants."""
    names = list(compose["services"])
    out: dict[str, str] = {}
    for name, service in compose["services"].items():
        for dep, rule in (service.get("depends_on") or {}).items():
            if names.index(dep) > names.index(name):
                raise ValueError(f"{name} depends on {dep}, listed after it")
            condition = str(rule.get("condition", "service_started"))
            if out.get(dep, condition) != condition:
                raise ValueError(f"{dep}: awaited both as {out[dep]} and {condition}")
            out[dep] = condition
    return out
