"""The background sampler: periodic, bounded history, robust to a failing consumer."""

from __future__ import annotations

import threading
import time

import pytest

from eddl.profiler.dynamic import DynamicCollector
from eddl.profiler.profiles import DynamicProfile
from eddl.profiler.sampler import Sampler


def wait_for(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_samples_periodically_and_keeps_a_bounded_history() -> None:
    with Sampler(period_s=0.02, history=3) as sampler:
        assert sampler.running
        assert sampler.latest() is not None  # the first sample is taken at start
        assert wait_for(lambda: len(sampler.history()) == 3)
        first = sampler.history()[0]
        assert wait_for(lambda: sampler.history()[0] is not first)
    assert not sampler.running
    stamps = [s.timestamp for s in sampler.history()]
    assert len(stamps) == 3 and stamps == sorted(stamps)


def test_stop_is_prompt_even_with_a_long_period() -> None:
    sampler = Sampler(period_s=3600.0)
    sampler.start()
    t0 = time.monotonic()
    sampler.stop()
    assert not sampler.running
    assert time.monotonic() - t0 < 5.0  # join() would otherwise wait the whole period


def test_a_failing_consumer_does_not_stop_sampling() -> None:
    calls: list[DynamicProfile] = []

    def bad(sample: DynamicProfile) -> None:
        calls.append(sample)
        raise RuntimeError("consumer bug")

    with Sampler(period_s=0.02, on_sample=bad):
        assert wait_for(lambda: len(calls) >= 3)


def test_collector_errors_are_counted_and_sampling_goes_on() -> None:
    real = DynamicCollector()
    failures = threading.Event()

    class Flaky(DynamicCollector):
        def __init__(self) -> None:
            self.n = 0

        def sample(self) -> DynamicProfile:
            self.n += 1
            if self.n % 2 == 0:
                failures.set()
                raise OSError("transient /proc read failure")
            return real.sample()

    flaky = Flaky()
    with Sampler(period_s=0.02, collector=flaky) as sampler:
        assert wait_for(lambda: sampler.errors >= 2 and flaky.n >= 5)
    assert failures.is_set()


def test_start_twice_is_an_error() -> None:
    with Sampler(period_s=10.0) as sampler, pytest.raises(RuntimeError):
        sampler.start()


@pytest.mark.parametrize("period", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_period_is_refused(period: float) -> None:
    with pytest.raises(ValueError, match="period_s"):
        Sampler(period_s=period)


def test_bad_history_is_refused() -> None:
    with pytest.raises(ValueError, match="history"):
        Sampler(history=0)
    with pytest.raises(TypeError):
        Sampler(period_s="5")  # type: ignore[arg-type]
