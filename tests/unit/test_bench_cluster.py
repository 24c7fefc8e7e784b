"""bench.cluster: its options refuse bad values before any cluster starts; the noise interval."""

from __future__ import annotations

import math
import sys

import pytest

from bench.cluster import _leader_pythons, _ratio_interval, main
from bench.scale import _Client, wake_latencies


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scenarios", "straggler"], "unknown scenario(s) ['straggler']"),
        (["--crash-period", "0"], "--crash-period must be > 0"),
        (["--churn-period", "nan"], "--churn-period must be > 0"),
        (["--reps", "0"], "--reps must be >= 1"),
        (["--first-rep", "-1"], "--first-rep must be in 0..1000000"),
    ],
)
def test_bad_options_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--part", "policies", "--no-write", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_ratio_interval_of_equal_policies_is_one() -> None:
    runs = [10.0, 11.0, 12.0, 13.0]
    low, high = _ratio_interval({"sync": runs, "async": runs, "auto": runs})
    assert low <= 1.0 <= high


def test_ratio_interval_follows_a_slower_auto() -> None:
    low, high = _ratio_interval(
        {"sync": [10.0, 10.5, 11.0], "async": [20.0, 21.0], "auto": [15.0, 15.5, 16.0]}
    )
    assert 1.3 < low <= high < 1.7


def test_ratio_interval_without_runs_is_undefined() -> None:
    low, high = _ratio_interval({"sync": [1.0], "async": [], "auto": [1.0]})
    assert math.isnan(low) and math.isnan(high)


def test_leader_interpreters_are_labelled_and_checked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _leader_pythons([]) == {"this": sys.executable}
    assert _leader_pythons([sys.executable]) == {"this": sys.executable}
    assert _leader_pythons([f"old={sys.executable}", f"new={sys.executable}"]) == {
        "old": sys.executable,
        "new": sys.executable,
    }
    for bad in (["/no/such/python"], [f"a={sys.executable}", f"a={sys.executable}"], ["=x"]):
        with pytest.raises(SystemExit) as exc:
            main(["--part", "scale", "--no-write", *(f"--leader-python={v}" for v in bad)])
        assert exc.value.code == 2 and "--leader-python" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--part", "scale", "--no-write", "--clients", "4,0"])


def test_wake_latency_counts_only_clients_already_waiting_when_the_round_closed() -> None:
    closer = _Client("a", "c0", "j", 1)
    closer.closers = {5: 10.0, 6: 20.0}
    waiter = _Client("a", "c1", "j", 1)
    # waiting before version 5 was made: counted; asked after it: not a wake-up
    waiter.answers = [(9.0, 10.004, 5), (10.5, 10.6, 5), (19.0, 20.002, 6), (1.0, 2.0, 4)]
    got = wake_latencies([closer, waiter])
    assert [round(x, 6) for x in got] == [0.004, 0.002]
