"""``UnreachableReporter``: where the worker is trying and for how long, louder after a minute.

A hand-driven clock: the reporter reads the time only through it.
"""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from eddl.worker.unreachable import UnreachableReporter

LEADER = "10.0.0.5:50051"
REASON = "UNAVAILABLE: failed to connect to all addresses"


pytestmark = pytest.mark.usefixtures("every_log_level")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _fail_for(reporter: UnreachableReporter, clock: Clock, seconds: float, step: float) -> None:
    """A failed call every ``step`` seconds for ``seconds`` (the worker's backoff loop)."""
    for _ in range(round(seconds / step)):
        clock.now += step
        reporter.failed(LEADER, REASON, [LEADER, "10.0.0.6:50051"])


def _levels(logs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(entry["log_level"], entry["event"]) for entry in logs]


def test_the_first_minute_says_where_once_at_info() -> None:
    clock = Clock()
    reporter = UnreachableReporter(clock=clock)
    with capture_logs() as logs:
        reporter.failed(LEADER, REASON)
        _fail_for(reporter, clock, 59.0, 1.0)
    assert _levels(logs) == [("info", "leader unreachable")]
    assert logs[0]["leader"] == LEADER and logs[0]["reason"] == REASON
    assert reporter.failing_s == pytest.approx(59.0)


def test_after_a_minute_a_warning_says_where_and_how_long_once_a_minute() -> None:
    clock = Clock()
    reporter = UnreachableReporter(clock=clock)
    with capture_logs() as logs:
        reporter.failed(LEADER, REASON)
        _fail_for(reporter, clock, 180.0, 5.0)  # backoff_max_s: a call every 5 s
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert [w["failing_s"] for w in warnings] == [60.0, 120.0, 180.0]
    first = warnings[0]
    assert first["event"] == "leader unreachable, still trying"
    assert first["leader"] == LEADER and first["leaders"] == [LEADER, "10.0.0.6:50051"]
    assert first["failed_calls"] == 13 and first["reason"] == REASON
    assert warnings[-1]["failed_calls"] == 37


def test_a_success_ends_the_outage_and_the_next_one_starts_quiet() -> None:
    clock = Clock()
    reporter = UnreachableReporter(clock=clock)
    with capture_logs() as logs:
        reporter.failed(LEADER, REASON)
        _fail_for(reporter, clock, 90.0, 5.0)
        reporter.reached(LEADER)
        reporter.reached(LEADER)  # no outage: nothing to say
        reporter.failed(LEADER, REASON)
        _fail_for(reporter, clock, 30.0, 5.0)
    assert _levels(logs) == [
        ("info", "leader unreachable"),
        ("warning", "leader unreachable, still trying"),
        ("info", "leader reachable again"),
        ("info", "leader unreachable"),
    ]
    assert logs[2]["failed_for_s"] == 90.0 and logs[2]["failed_calls"] == 19
    assert reporter.failures == 7 and reporter.failing_s == pytest.approx(30.0)


def test_a_reporter_with_impossible_periods_is_refused() -> None:
    with pytest.raises(ValueError, match="repeat_s"):
        UnreachableReporter(repeat_s=0)
    with pytest.raises(ValueError, match="warn_after_s"):
        UnreachableReporter(warn_after_s=-1)
