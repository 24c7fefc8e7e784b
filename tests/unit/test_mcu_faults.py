"""The fault-injecting proxy's plan and its per-frame mangling (the proxy itself is exercised
end to end in tests/firmware/test_link_faults.py)."""

from __future__ import annotations

import random
import threading

import pytest

from eddl.mcu.faults import FaultPlan, FaultProxy, _Mangler


def mangler(plan: FaultPlan) -> _Mangler:
    return _Mangler(plan, random.Random(plan.seed), "to_device", threading.Lock())


def test_plan_validation() -> None:
    with pytest.raises(ValueError):
        FaultPlan(rate=1.5)
    with pytest.raises(ValueError):
        FaultPlan(kinds=("melt",))
    with pytest.raises(ValueError):
        FaultPlan(kinds=())


def test_no_fault_at_rate_zero_and_frames_are_cut_at_delimiters() -> None:
    m = mangler(FaultPlan(rate=0.0))
    assert m.feed(b"abc") == b""
    assert m.feed(b"d\x00ef\x00g") == b"abcd\x00ef\x00"
    assert m.feed(b"\x00") == b"g\x00"


@pytest.mark.parametrize("kind", ["flip", "truncate", "drop", "inject"])
def test_each_kind_changes_the_frame_and_is_counted(kind: str) -> None:
    plan = FaultPlan(rate=1.0, kinds=(kind,), seed=3)
    frame = bytes(range(1, 40)) + b"\x00"
    out = mangler(plan).feed(frame)
    assert out != frame
    if kind == "drop":
        assert out == b""
    else:
        assert out.endswith(b"\x00")
    assert plan.counts[kind] == 1 and plan.counts[f"{kind}:to_device"] == 1


def test_fault_budget_is_bounded() -> None:
    plan = FaultPlan(rate=1.0, kinds=("drop",), max_faults=2)
    m = mangler(plan)
    out = m.feed(b"ab\x00" * 5)
    assert out == b"ab\x00" * 3 and plan.counts["drop"] == 2


def test_proxy_needs_a_socket_url() -> None:
    with pytest.raises(ValueError):
        FaultProxy.for_url("/dev/ttyACM0", FaultPlan())
