"""The shaped-link fleet sweep's pure parts: its plan of points, the link counters it reads
from ``/proc/net/dev``, and a link's use; bad values are refused with a clear error."""

from __future__ import annotations

import math

import pytest

from bench.fleet_link import Point, link_use, net_dev_bytes, plan

# /proc/net/dev's layout (header and rows cut short: only the first and ninth counters matter)
NET_DEV = (
    "Inter-|   Receive                            |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets\n"
    "    lo:  123456  100 0 0 0 0 0 0   123456  100 0 0 0 0 0 0\n"
    "ep123x0c: 8000000 5000 0 0 0 0 0 0  2500000 4000 0 0 0 0 0 0\n"
)


def test_the_plan_goes_rate_by_rate_and_count_by_count() -> None:
    points = plan([100.0, 20.0], [4, 16], ["flat", "1-2", "auto"])
    assert points[:3] == [Point(100.0, 4, "flat"), Point(100.0, 4, "1-2"), Point(100.0, 4, "auto")]
    assert len(points) == 12 and points[-1] == Point(20.0, 16, "auto")
    # auto: as many standby candidates as the largest fixed tree has sub-leaders
    assert [p.sub_leaders for p in points[:3]] == [0, 2, 4]
    assert plan([20.0], [4], ["1-4"])[0].sub_leaders == 4


@pytest.mark.parametrize(
    ("rates", "counts", "topologies", "error"),
    [
        ([0.0], [4], ["flat"], "rate"),
        ([math.nan], [4], ["flat"], "rate"),
        ([20.0], [0], ["flat"], "device count"),
        ([20.0], [4], ["1-3"], "unknown topology"),
        ([20.0], [2, 8], ["1-4"], "needs >= 4 devices"),
        ([], [4], ["flat"], "at least one"),
    ],
)
def test_a_bad_plan_is_refused(
    rates: list[float], counts: list[int], topologies: list[str], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        plan(rates, counts, topologies)


def test_the_link_counters_are_read_by_interface_name() -> None:
    assert net_dev_bytes(NET_DEV, "ep123x0c") == (8_000_000, 2_500_000)
    assert net_dev_bytes(NET_DEV, "lo") == (123456, 123456)
    with pytest.raises(ValueError, match="no interface 'eth9'"):
        net_dev_bytes(NET_DEV, "eth9")


def test_link_use_is_bits_over_capacity() -> None:
    assert link_use(2_500_000, 1.0, 20.0) == pytest.approx(1.0)
    assert link_use(1_250_000, 2.0, 20.0) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        link_use(100, 0.0, 20.0)
    with pytest.raises(ValueError):
        link_use(-1, 1.0, 20.0)
