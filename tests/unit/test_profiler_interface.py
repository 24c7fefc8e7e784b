"""An interface's byte counters: read on demand, a name refused before it is used."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from eddl.profiler.interface import InterfaceBytes, InterfaceCounter


class Counters:
    """What psutil reports per interface, set by the test."""

    def __init__(self) -> None:
        self.table: dict[str, Any] = {"lo": SimpleNamespace(bytes_recv=10, bytes_sent=20)}

    def __call__(self) -> dict[str, Any]:
        return dict(self.table)


def test_reads_the_named_interfaces_counters_each_time() -> None:
    counters = Counters()
    counter = InterfaceCounter("lo", counters)
    assert counter.read() == InterfaceBytes(received=10, sent=20)
    counters.table["lo"] = SimpleNamespace(bytes_recv=1_010, bytes_sent=5_020)
    assert counter.read() == InterfaceBytes(received=1_010, sent=5_020)
    del counters.table["lo"]  # the interface went down
    assert counter.read() is None


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("eth9", r"no network interface 'eth9' here \(interfaces: lo\)"),
        ("", "not a network interface's name"),
        ("a" * 16, "not a network interface's name"),
        ("eth0/../x", "not a network interface's name"),
    ],
)
def test_a_name_this_machine_lacks_or_no_interface_could_have_is_refused(
    name: str, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        InterfaceCounter(name, Counters())


def test_the_machines_own_loopback_counts_bytes() -> None:
    counter = InterfaceCounter("lo")
    reading = counter.read()
    assert reading is not None and reading.received >= 0 and reading.sent >= 0
