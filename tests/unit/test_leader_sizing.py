"""Task sizing: probes, the measured speed, the overhead budget, the end-of-data rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.sizing import rounds_one_by_one
from eddl.leader import sizing
from eddl.leader.sizing import Busy, RoundTarget, TaskSizer
from tests.unit.test_leader_support import Clock


def sizer(clock: Clock, **kw: float) -> TaskSizer:
    args: dict[str, float] = {
        "task_seconds": 1.0,
        "min_samples": 8,
        "max_samples": 4096,
        "default_samples": 64,
        "granularity": 8,
    }
    args.update(kw)
    return TaskSizer(now=clock, **args)  # type: ignore[arg-type]


def test_an_unknown_node_gets_a_probe_and_a_benchmark_a_quarter_of_its_target() -> None:
    s = sizer(Clock())
    assert s.size_for("new") == 16  # a quarter of the default, in whole mini-batches
    s.set_prior("bench", 400.0)
    assert s.size_for("bench") == 96  # 400 sps x 1 s x 1/4, rounded down to 8s
    s.set_prior("bad", float("inf"))
    assert s.samples_per_second("bad") is None


def test_a_measured_speed_replaces_the_benchmark_and_overhead_is_budgeted() -> None:
    clock = Clock()
    s = sizer(clock)
    s.set_prior("w", 10_000.0)
    s.observe("w", 200, 1.0, overhead=0.5)
    assert s.measured("w") and s.samples_per_second("w") == pytest.approx(200.0)
    assert s.size_for("w") == 96  # 200 sps x (1 s - 0.5 s overhead) -> 100 -> 96
    s.observe("w", 200, 1.0, overhead=5.0)  # transfers longer than the target
    assert s.overhead("w") == 0.7 * 0.5 + 0.3 * 5.0
    assert s.size_for("w") == 48  # at least a quarter of the target still trains: 50 -> 48


def test_the_end_of_data_shrinks_a_task_so_workers_finish_together() -> None:
    clock = Clock()
    s = sizer(clock)
    for node, sps in (("fast", 400.0), ("slow", 100.0)):
        s.observe(node, int(sps), 1.0, overhead=0.0)
    assert s.size_for("fast") == 400
    # 100 samples left, the slow worker busy for 1 more second with its task:
    # E = (100 + 100 x 1) / 500 = 0.4 s -> the fast worker gets 160 samples.
    busy = [Busy("slow", clock(), 100)]
    assert s.tail("fast", 400, 100, busy, ["fast", "slow"]) == 160
    # far from the end nothing changes
    assert s.tail("fast", 400, 100_000, busy, ["fast", "slow"]) == 400


def test_a_round_trains_the_budget_when_the_link_is_cheap_else_takes_the_job_ceiling() -> None:
    clock = Clock()
    s = sizer(clock, round_samples=512)
    workers = ["a", "b"]
    assert s.round_target(workers) == RoundTarget(1.0)  # nothing measured: task_seconds
    s.observe("a", 1000, 1.0, overhead=0.0)
    s.observe("b", 1000, 1.0, overhead=0.0)
    # 512 samples at 2000 samples/s together, and no cost per task: a quarter of a second of
    # training on each worker.
    assert s.round_target(workers) == RoundTarget(pytest.approx(0.256), training=True)
    # The leader sees each task take 0.2 s more than its training. Short rounds: 512 samples
    # summed per 0.456 s (1123/s); 1 s rounds: 2000 samples averaged (1000 a row) per 1.2 s
    # (833/s). Still the budget.
    s.observe("a", 1000, 1.0, overhead=0.0, wall=1.2)
    s.observe("b", 1000, 1.0, overhead=0.0, wall=1.2)
    assert s.round_target(workers) == RoundTarget(pytest.approx(0.256), training=True)
    # Fast workers (40,000 samples/s together) behind the same link: 512 per 0.2128 s
    # (2406/s) against 20,000 per 1.2 s (16,667/s): the job's task_seconds.
    fast = sizer(clock, round_samples=512)
    for w in workers:
        fast.observe(w, 20_000, 1.0, overhead=0.0, wall=1.2)
    assert fast.round_target(workers) == RoundTarget(1.0)


def test_a_cheaper_task_makes_a_round_shorter_not_bigger() -> None:
    # Speeds 600, 300, 100 samples/s and a budget of 256: 0.256 s of training on each,
    # shares 153.6, 76.8, 25.6 samples -> the nearest mini-batch of 8: 152, 80, 24 (256 in
    # all), whatever each worker reports as its overhead.
    for overhead, whole in ((0.0, 152), (0.05, 120), (0.15, 56)):
        s = sizer(Clock(), round_samples=256)
        for w, sps in (("a", 600.0), ("b", 300.0), ("c", 100.0)):
            s.observe(w, int(sps), 1.0, overhead=overhead, wall=1.0 + overhead)
        target = s.round_target(["a", "b", "c"])
        assert target == RoundTarget(pytest.approx(0.256), training=True)
        sizes = [s.size_for(w, target.seconds, training=True) for w in ("a", "b", "c")]
        assert sizes == [152, 80, 24]
        # A whole task of the same time, the overhead taken off (what the round held before):
        # 600 x (0.256 s - overhead) rounded down, smaller as the overhead grows.
        assert s.size_for("a", target.seconds) == whole
    tiny = sizer(Clock(), round_samples=256)
    tiny.observe("slow", 10, 1.0, overhead=0.0)
    assert tiny.size_for("slow", 0.1, training=True) == 8  # under half a batch: the minimum


def test_round_targets_never_exceed_the_job_and_one_peer_cannot_set_them() -> None:
    s = sizer(Clock(), round_samples=512, task_seconds=0.5)
    for w in ("a", "b", "c"):
        s.observe(w, 4000, 1.0, overhead=0.0, wall=1.001)
    s.observe("c", 4000, 1.0, overhead=1e9)  # one absurd report
    assert s.round_target(["a", "b", "c"]) == RoundTarget(
        pytest.approx(512 / 12_000), training=True
    )
    slow = sizer(Clock(), round_samples=512, task_seconds=0.5)
    slow.observe("a", 100, 1.0, overhead=0.0)  # 512 samples would take 5 s: the job's 0.5
    assert slow.round_target(["a"]) == RoundTarget(0.5)
    assert sizer(Clock(), round_samples=0).round_target(["a"]) == RoundTarget(1.0)  # no budget
    with pytest.raises(ValueError):
        sizer(Clock(), round_samples=-1)


def test_a_round_is_never_shorter_than_the_slowest_workers_smallest_task() -> None:
    # 256 samples at 2,060 samples/s would be 0.124 s of training, but the worker of 60
    # samples/s needs 0.133 s for its smallest task (8): the round waits for it anyway, so
    # the others train that long too (it still makes 96% of the progress per second of
    # rounds without it: it takes part).
    s = sizer(Clock(), round_samples=256)
    for w, sps in (("a", 1000.0), ("b", 1000.0), ("slow", 60.0)):
        s.observe(w, int(sps), 1.0, overhead=0.0)
    target = s.round_target(["a", "b", "slow"])
    assert target == RoundTarget(pytest.approx(8 / 60), training=True)
    sizes = [s.size_for(w, target.seconds, training=True) for w in ("a", "b", "slow")]
    assert sizes == [136, 136, 8]


def test_a_worker_whose_smallest_task_holds_every_round_back_sits_short_rounds_out() -> None:
    # The worker of 40 samples/s needs 0.2 s for 8 samples; the other two train the budget
    # in 0.128 s. With it, rounds of 0.2 s (+ 0.05 s of cost per task) hold 408 samples
    # worth 256 summed: 1,024/s; without it, 256 per 0.178 s: 1,438/s.
    s = sizer(Clock(), round_samples=256)
    for w, sps in (("a", 1000.0), ("b", 1000.0), ("slow", 40.0)):
        s.observe(w, int(sps), 1.0, overhead=0.0, wall=1.05)
    target = s.round_target(["a", "b", "slow"])
    assert target == RoundTarget(pytest.approx(0.128), training=True, sit_out=frozenset({"slow"}))
    # Many equal workers whose smallest tasks already exceed the budget: none sits out.
    many = sizer(Clock(), round_samples=256)
    crowd = [f"w{i}" for i in range(64)]
    for w in crowd:
        many.observe(w, 100, 1.0, overhead=0.0, wall=1.05)
    assert many.round_target(crowd) == RoundTarget(pytest.approx(0.08), training=True)


def test_a_worker_whose_share_rounds_up_to_a_longer_task_sits_short_rounds_out() -> None:
    # Speeds of the compute-bound benchmark cluster (throttles 40, 40, 80, 160), mini-batches
    # of 32, 0.04 s of cost per task. The round would train 256 / 3,526 = 0.073 s; the
    # slowest worker's share of it (18 samples) rounds up to a whole batch of 32, which takes
    # it 0.13 s: every round would last that long, not the 0.073 s its smallest task (8)
    # suggests. Without it the three others train 0.078 s (96, 96 and 32 samples).
    s = sizer(Clock(), round_samples=256, granularity=32)
    workers = ("a", "b", "c", "slow")
    for w, sps in zip(workers, (1340.0, 1340.0, 600.0, 246.0), strict=True):
        s.observe(w, int(sps), 1.0, overhead=0.0, wall=1.04)
    target = s.round_target(workers)
    assert target == RoundTarget(
        pytest.approx(256 / 3280), training=True, sit_out=frozenset({"slow"})
    )
    sizes = [s.size_for(w, target.seconds, training=True) for w in ("a", "b", "c")]
    assert sizes == [96, 96, 32]


@settings(max_examples=200, deadline=None)
@given(
    rates=st.lists(st.floats(1.0, 1e5), min_size=1, max_size=40),
    budget=st.integers(1, 1 << 16),
    granularity=st.sampled_from([1, 8, 32]),
    min_samples=st.integers(1, 64),
)
def test_all_short_rounds_at_once_match_each_round_on_its_own(
    rates: list[float], budget: int, granularity: int, min_samples: int
) -> None:
    # The rule's definition, one round of the j fastest at a time, against the sizer's
    # all-at-once form: the same training times, longest tasks and samples, to the bit.
    s = sizer(Clock(), round_samples=budget, granularity=granularity, min_samples=min_samples)
    fastest = sorted(rates, reverse=True)
    at_once = s.short_rounds(np.array(fastest))
    one_by_one = rounds_one_by_one(s, fastest)
    for got, want in zip(at_once, one_by_one, strict=True):
        assert [float(v) for v in got] == want
    # ... and the rounds hold the tasks the sizer really hands out for those shares.
    shorts, _, held = at_once
    for j, short in enumerate(shorts):
        assert held[j] == sum(s._training_size(r * short) for r in fastest[: j + 1])


def test_rounds_rated_in_blocks_of_bounded_memory_are_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(0)
    s = sizer(Clock(), round_samples=256, granularity=32)
    for n in (1, 5, 33):
        rates = np.array(sorted(rng.uniform(1.0, 2000.0, n), reverse=True))
        whole = s.short_rounds(rates)
        monkeypatch.setattr(sizing, "_BLOCK_CELLS", 7)  # blocks of 1-7 rounds
        blocks = s.short_rounds(rates)
        monkeypatch.undo()
        assert [a.tolist() for a in blocks] == [a.tolist() for a in whole]
        assert [a.tolist() for a in whole] == [list(v) for v in rounds_one_by_one(s, list(rates))]


class _CountingEstimator:
    """A speed that decays with the clock, counting its reads."""

    reads = 0

    def __init__(self) -> None:
        self.sps: float | None = None
        self.since = 0.0

    def observe(self, amount: float, seconds: float, at: float) -> None:
        self.sps, self.since = amount / seconds, at

    def samples_per_second(self, now: float) -> float | None:
        _CountingEstimator.reads += 1
        return None if self.sps is None else self.sps / (1.0 + (now - self.since))


def test_speeds_and_the_round_target_are_read_once_per_instant_and_estimate() -> None:
    clock = Clock()
    s = TaskSizer(now=clock, round_samples=256, granularity=8, estimator_factory=_CountingEstimator)
    workers = [f"w{i}" for i in range(6)]
    for i, w in enumerate(workers):
        s.observe(w, 100 * (i + 1), 1.0, overhead=0.01)
    _CountingEstimator.reads = 0
    first = s.round_target(workers)
    assert _CountingEstimator.reads == len(workers)
    # The same instant, the same estimates: the hand-outs of one command reuse both.
    for w in workers:
        assert s.round_target(workers) is first
        s.tail(w, 64, 10**9, [], workers)
        s.size_for(w, training=True)
    assert _CountingEstimator.reads == len(workers)

    def fresh(among: list[str] = workers) -> RoundTarget:  # a sizer that never kept anything
        again = TaskSizer(now=clock, round_samples=256, granularity=8)
        again._estimators, again._overheads, again._links = (
            s._estimators,
            s._overheads,
            s._links,
        )
        return again.round_target(among)

    # A new estimate is read at once, in the same instant...
    s.observe("w0", 5000, 1.0, overhead=0.01)
    assert s.samples_per_second("w0") == 5000.0
    assert s.round_target(workers) == fresh() != first
    # ... and so is the clock's next instant (this estimator decays with time).
    before = s.samples_per_second("w1")
    clock.advance(1.0)
    assert s.samples_per_second("w1") == pytest.approx(before / 2)  # type: ignore[operator]
    assert s.round_target(workers) == fresh()
    # Another set of workers is another target.
    assert s.round_target(workers[:2]) == fresh(workers[:2]) != s.round_target(workers)
