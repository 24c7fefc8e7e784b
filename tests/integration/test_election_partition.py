"""A network partition (namespaces, veth pairs, a bridge): 3 etcd members, one per namespace
with its candidate. Isolating the root's namespace: the root steps down before anyone else is
elected, a new root takes over in a higher term, no term ever has two roots; healed, the old
root takes part again in the new term. Needs root; skipped where namespaces cannot be made."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eddl.profiler.netlab import netns_unavailable_reason
from tests.etcd_procs import ETCD

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
NET = "10.214.77"


@pytest.fixture(scope="module", autouse=True)
def _need_netns() -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(f"NETNS TEST SKIPPED: {reason}")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def three_namespaces() -> Iterator[tuple[str, list[str]]]:
    tag = f"eddlp{os.getpid()}"
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


class Procs:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, ns: str, argv: list[str], log: Path) -> None:
        with log.open("wb") as out:
            self.procs.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", ns, *argv],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                )
            )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def wait_for(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        time.sleep(0.1)


def test_an_isolated_root_steps_down_and_a_new_root_takes_over(tmp_path: Path) -> None:
    cluster = ",".join(f"m{i}=http://{NET}.{i}:2380" for i in (1, 2, 3))
    procs = Procs(tmp_path)
    with three_namespaces() as (hub, spaces):
        try:
            for i, ns in enumerate(spaces, 1):
                me = f"{NET}.{i}"
                procs.start(ns, [
                    ETCD, f"--name=m{i}", f"--data-dir={tmp_path / f'etcd{i}'}",
                    f"--listen-client-urls=http://{me}:2379,http://127.0.0.1:2379",
                    f"--advertise-client-urls=http://{me}:2379",
                    f"--listen-peer-urls=http://{me}:2380",
                    f"--initial-advertise-peer-urls=http://{me}:2380",
                    f"--initial-cluster={cluster}", "--initial-cluster-state=new",
                    "--heartbeat-interval=100", "--election-timeout=1000",
                ], tmp_path / f"etcd{i}.log")  # fmt: skip
            outs = [tmp_path / f"c{i}.out" for i in (1, 2, 3)]
            for i, ns in enumerate(spaces, 1):
                procs.start(ns, [
                    sys.executable, "-m", "tests.integration.election_candidate",
                    "--endpoint", "http://127.0.0.1:2379", "--id", f"c{i}",
                    "--address", f"{NET}.{i}:50051", "--score", str(i), "--ttl", "3",
                    "--margin", "1",
                ], outs[i - 1])  # fmt: skip

            def elected() -> list[tuple[int, int]]:
                return [(i, e["term"]) for i, out in enumerate(outs) for e in events(out)
                        if e["kind"] in ("elected", "takeover")]  # fmt: skip

            wait_for(lambda: elected(), 90, "a first root")
            (old, first_term), *_ = elected()
            isolated_at = time.time()
            ip("-n", hub, "link", "set", f"h{old + 1}", "down")
            wait_for(lambda: any(t > first_term for _, t in elected()), 60, "a new root")
            new, new_term = min(
                ((i, t) for i, t in elected() if t > first_term), key=lambda it: it[1]
            )
            assert new != old
            downs = [e for e in events(outs[old]) if e["kind"] == "step_down"]
            assert downs and downs[0]["term"] == first_term
            takeover_at = next(
                e["at"] for e in events(outs[new]) if e["term"] == new_term
                and e["kind"] in ("elected", "takeover")
            )  # fmt: skip
            # Fencing: the isolated root stopped acting before anyone else was elected.
            assert isolated_at < downs[0]["at"] < takeover_at
            ip("-n", hub, "link", "set", f"h{old + 1}", "up")
            # Healed, the old root takes part again in the new era: it follows the root (or,
            # should that root have stepped down meanwhile, stands in a still higher term).
            wait_for(
                lambda: any(
                    e["kind"] in ("following", "elected", "takeover") and e["term"] >= new_term
                    for e in events(outs[old])
                ),
                90,
                "the old root back in a term >= the new root's",
            )
            # Never two roots in one term.
            terms = [t for _, t in elected()]
            assert len(terms) == len(set(terms)), elected()
        finally:
            procs.stop()
