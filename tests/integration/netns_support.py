"""Network namespaces for the partition tests: a hub namespace holding a bridge, and three
namespaces each joined to it by a veth pair (``eth0`` inside, ``h1``..``h3`` on the hub), at
``NET.1``..``NET.3``. Cutting ``hN`` (``ip link set hN down``) isolates namespace N; bringing it
up heals it. Needs root; :func:`eddl.profiler.netlab.netns_unavailable_reason` says why not."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.etcd_procs import ETCD

__all__ = ["NET", "etcd_argv", "ip", "three_namespaces"]

NET = "10.214.77"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def three_namespaces(tag: str = "eddlp") -> Iterator[tuple[str, list[str]]]:
    """The hub's name and the three namespaces' names; all deleted on exit."""
    tag = f"{tag}{os.getpid()}"
    hub, spaces = f"{tag}h", [f"{tag}n{i}" for i in (1, 2, 3)]
    made: list[str] = []
    try:
        for ns in (hub, *spaces):
            ip("netns", "add", ns)
            made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", hub, "link", "add", "br0", "type", "bridge")
        ip("-n", hub, "link", "set", "br0", "up")
        for i, ns in enumerate(spaces, 1):
            ip("-n", hub, "link", "add", f"h{i}", "type", "veth", "peer", "name", "eth0",
               "netns", ns)  # fmt: skip
            ip("-n", hub, "link", "set", f"h{i}", "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{NET}.{i}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
        yield hub, spaces
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def etcd_argv(i: int, data_dir: Path) -> list[str]:
    """etcd member ``m<i>`` of the 3-member cluster, run in namespace ``i`` (clients also on
    the namespace's loopback, port 2379: each namespace has its own ports)."""
    me = f"{NET}.{i}"
    cluster = ",".join(f"m{j}=http://{NET}.{j}:2380" for j in (1, 2, 3))
    return [
        ETCD, f"--name=m{i}", f"--data-dir={data_dir}",
        f"--listen-client-urls=http://{me}:2379,http://127.0.0.1:2379",
        f"--advertise-client-urls=http://{me}:2379",
        f"--listen-peer-urls=http://{me}:2380",
        f"--initial-advertise-peer-urls=http://{me}:2380",
        f"--initial-cluster={cluster}", "--initial-cluster-state=new",
        "--heartbeat-interval=100", "--election-timeout=1000",
        "--pre-vote=true",  # as deploy/ha/etcd.env.example: a healed member deposes no one
    ]  # fmt: skip
