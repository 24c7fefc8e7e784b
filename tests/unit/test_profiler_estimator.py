"""The runtime estimator: EWMA of real task rates, confidence, prior blending, throttling."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np
import pytest

from eddl.learn import tifed
from eddl.profiler.estimator import RateEstimator, RuntimeEstimator, TransferEstimator


def test_no_data_and_no_prior_means_no_estimate() -> None:
    est = RuntimeEstimator()
    assert est.samples_per_second(0.0) is None
    assert est.confidence(0.0) == 0.0
    assert est.seconds_for(100, 0.0) is None


def test_prior_alone_is_the_estimate_with_zero_confidence() -> None:
    est = RuntimeEstimator(prior=500.0, prior_at=10.0)
    assert est.samples_per_second(20.0) == 500.0
    assert est.confidence(20.0) == 0.0
    assert est.seconds_for(1000, 20.0) == pytest.approx(2.0)


def test_first_observation_without_prior_is_taken_as_is() -> None:
    est = RuntimeEstimator()
    est.observe(200, 0.5, at=100.0)
    assert est.samples_per_second(100.0) == pytest.approx(400.0)
    assert est.observations == 1


def test_observations_pull_away_from_a_wrong_prior() -> None:
    est = RuntimeEstimator(prior=1000.0)
    for i in range(5):
        est.observe(100, 0.5, at=float(i))  # 200 samples/s, the benchmark was 5x optimistic
    assert est.samples_per_second(5.0) == pytest.approx(200.0, rel=0.25)


def test_confidence_grows_with_observations_and_decays_with_age() -> None:
    est = RuntimeEstimator(half_life_s=60.0)
    seen = []
    for _ in range(6):
        est.observe(10, 1.0, at=100.0)
        seen.append(est.confidence(100.0))
        assert 0.0 <= seen[-1] <= 1.0
    assert seen == sorted(seen) and seen[0] < seen[-1]
    assert est.confidence(160.0) == pytest.approx(seen[-1] / 2)
    assert est.confidence(100.0 + 600.0) < 0.01


def test_stale_estimate_relaxes_toward_the_prior() -> None:
    est = RuntimeEstimator(prior=1000.0, half_life_s=60.0)
    for _ in range(20):
        est.observe(100, 1.0, at=0.0)
    assert est.samples_per_second(0.0) == pytest.approx(100.0, rel=0.01)
    assert est.samples_per_second(60.0) == pytest.approx(math.sqrt(100.0 * 1000.0), rel=0.01)
    assert est.samples_per_second(6000.0) == pytest.approx(1000.0, rel=0.01)


def test_tracks_a_3x_slowdown_within_5_observations_exactly() -> None:
    est = RuntimeEstimator(prior=1000.0)
    t = 0.0
    for _ in range(10):
        t += 1.0
        est.observe(1000, 1.0, at=t)
    assert est.samples_per_second(t) == pytest.approx(1000.0, rel=0.01)
    for k in range(5):
        t += 3.0
        est.observe(1000, 3.0, at=t)
        if k >= 2:  # the second shifted observation is taken as a regime change
            assert est.samples_per_second(t) == pytest.approx(1000.0 / 3, rel=0.25)


def test_a_lone_outlier_moves_the_estimate_by_alpha_only() -> None:
    est = RuntimeEstimator(alpha=0.4)
    for i in range(10):
        est.observe(1000, 1.0, at=float(i))
    est.observe(1000, 10.0, at=10.0)  # one task 10x slower (a neighbour's burst)
    expected = math.exp(math.log(1000.0) + 0.4 * (math.log(100.0) - math.log(1000.0)))
    assert est.samples_per_second(10.0) == pytest.approx(expected)
    est.observe(1000, 1.0, at=11.0)  # back to normal: no streak, plain EWMA step
    assert est.samples_per_second(11.0) == pytest.approx(
        math.exp(math.log(expected) + 0.4 * (math.log(1000.0) - math.log(expected)))
    )


def paced_task_loop(rate: float) -> Iterator[float]:
    """Real TIFeD training tasks of 20 samples (a few ms), each padded to ``20 / rate``
    seconds, as a device whose governor caps it at ``rate`` samples/s: the true rate is known
    exactly, so the test checks the estimator, not the neighbours sharing the CI machine."""
    config = tifed.TifedConfig(sizes=(784, 32, 10))
    trainer = tifed.TifedTrainer(config)
    params = tifed.init_params(config)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(20, 784)).astype(np.uint8)
    y = rng.integers(0, 10, size=20)
    while True:
        t0 = time.perf_counter()
        trainer.train(params, x, y)
        time.sleep(max(0.0, 20 / rate - (time.perf_counter() - t0)))
        yield time.perf_counter() - t0


def test_tracks_a_real_task_loop_that_becomes_3x_slower() -> None:
    fast, slow = 400.0, 400.0 / 3  # 50 ms tasks, then 150 ms tasks
    est = RuntimeEstimator(prior=fast * 1.2)  # a slightly optimistic micro-benchmark
    loop = paced_task_loop(fast)
    for _ in range(6):
        est.observe(20, next(loop), at=time.time())
    assert est.samples_per_second(time.time()) == pytest.approx(fast, rel=0.25)
    loop = paced_task_loop(slow)
    seen = []
    for _ in range(5):
        est.observe(20, next(loop), at=time.time())
        seen.append(est.samples_per_second(time.time()))
    assert seen[-1] == pytest.approx(slow, rel=0.25), seen
    assert seen == sorted(seen, reverse=True), seen  # it moves toward the new rate every time


@pytest.mark.parametrize(
    ("amount", "seconds"),
    [(0, 1.0), (-5, 1.0), (10, 0.0), (10, -1.0), (math.nan, 1.0), (10, math.inf)],
)
def test_bad_observations_are_refused_and_change_nothing(amount: float, seconds: float) -> None:
    est = RuntimeEstimator(prior=50.0)
    est.observe(100, 1.0, at=5.0)
    before = (est.samples_per_second(5.0), est.observations, est.confidence(5.0))
    with pytest.raises(ValueError):
        est.observe(amount, seconds, at=6.0)
    assert (est.samples_per_second(5.0), est.observations, est.confidence(5.0)) == before


def test_non_numbers_are_refused() -> None:
    est = RateEstimator()
    with pytest.raises(TypeError):
        est.observe("100", 1.0, at=0.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        est.observe(True, 1.0, at=0.0)
    assert est.observations == 0


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5, math.nan])
def test_bad_alpha_is_refused(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        RateEstimator(alpha=alpha)
    with pytest.raises(ValueError, match="shift_alpha"):
        RateEstimator(shift_alpha=alpha)


@pytest.mark.parametrize("ratio", [1.0, 0.5, math.inf, math.nan])
def test_bad_shift_ratio_is_refused(ratio: float) -> None:
    with pytest.raises(ValueError, match="shift_ratio"):
        RateEstimator(shift_ratio=ratio)


def test_bad_prior_is_refused() -> None:
    with pytest.raises(ValueError):
        RateEstimator(prior=0.0)
    est = RateEstimator(prior=10.0)
    with pytest.raises(ValueError):
        est.set_prior(math.nan)
    assert est.prior == 10.0


def test_out_of_order_reports_never_move_the_clock_back() -> None:
    est = TransferEstimator()
    est.observe(1000, 1.0, at=50.0)
    est.observe(1000, 1.0, at=40.0)
    assert est.last_observed_at == 50.0
    assert est.bytes_per_second(50.0) == pytest.approx(1000.0)


def test_reset_forgets_observations_but_keeps_the_prior() -> None:
    est = RuntimeEstimator(prior=10.0)
    est.observe(100, 1.0, at=1.0)
    est.reset()
    assert est.observations == 0
    assert est.samples_per_second(1.0) == 10.0
