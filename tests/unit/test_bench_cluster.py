"""bench.cluster: its options refuse bad values before any cluster starts; the noise interval."""

from __future__ import annotations

import math

import pytest

from bench.cluster import _ratio_interval, main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scenarios", "straggler"], "unknown scenario(s) ['straggler']"),
        (["--crash-period", "0"], "--crash-period must be > 0"),
        (["--churn-period", "nan"], "--churn-period must be > 0"),
        (["--reps", "0"], "--reps must be >= 1"),
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
