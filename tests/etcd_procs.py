"""Real etcd members for tests: free loopback ports picked here (etcd's gateway breaks on
port 0), a temporary data directory each, started and stopped by PID, readiness bounded."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.ports import free_port

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def coordinator(self) -> str:
        return f"etcd://127.0.0.1:{self.client_port}"

    def stop(self) -> None:
        """Kill the member by its PID and reap it."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def start_cluster(tmp: Path, size: int = 1, *, within_s: float = 20.0) -> list[EtcdMember]:
    tmp.mkdir(parents=True, exist_ok=True)
    members = [
        EtcdMember(f"m{i}", free_port(), free_port(), tmp / f"etcd-m{i}") for i in range(size)
    ]
    initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in members)
    for member in members:
        log = (tmp / f"etcd-{member.name}.log").open("wb")
        member.process = subprocess.Popen(
            [
                ETCD,
                f"--name={member.name}",
                f"--data-dir={member.data_dir}",
                f"--listen-client-urls={member.endpoint}",
                f"--advertise-client-urls={member.endpoint}",
                f"--listen-peer-urls=http://127.0.0.1:{member.peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{member.peer_port}",
                f"--initial-cluster={initial}",
                "--initial-cluster-state=new",
                "--heartbeat-interval=50",
                "--election-timeout=500",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
    deadline = time.monotonic() + within_s
    for member in members:
        while True:
            assert member.process is not None
            if member.process.poll() is not None:
                raise RuntimeError(f"etcd {member.name} exited: see {tmp}/etcd-{member.name}.log")
            with contextlib.suppress(httpx.HTTPError):
                reply = httpx.get(member.endpoint + "/health", timeout=1.0)
                if reply.status_code == 200 and reply.json().get("health") == "true":
                    break
            if time.monotonic() > deadline:
                stop_all(members)
                raise RuntimeError(f"etcd {member.name} not healthy within {within_s}s")
            time.sleep(0.05)
    return members


def stop_all(members: list[EtcdMember]) -> None:
    for member in members:
        member.stop()


@contextlib.contextmanager
def etcd_cluster(tmp: Path, size: int = 1) -> Iterator[list[EtcdMember]]:
    members = start_cluster(tmp, size)
    try:
        yield members
    finally:
        stop_all(members)
