"""A network partition (namespaces, veth pairs, a bridge): 3 etcd members, one per namespace
with its candidate. Isolating the root's namespace: the root steps down before anyone else is
elected, a new root takes over in a higher term, no term ever has two roots; healed, the old
root takes part again in the new term. Needs root; skipped where namespaces cannot be made."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from eddl.profiler.netlab import netns_unavailable_reason
from tests.integration.netns_support import NET, etcd_argv, ip, three_namespaces

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def _need_netns() -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(f"NETNS TEST SKIPPED: {reason}")


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
    procs = Procs(tmp_path)
    with three_namespaces() as (hub, spaces):
        try:
            for i, ns in enumerate(spaces, 1):
                procs.start(ns, etcd_argv(i, tmp_path / f"etcd{i}"), tmp_path / f"etcd{i}.log")
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
