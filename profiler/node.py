"""One object per daemon that keeps its whole profile up to date: :class:`NodeProfiler`.

It owns the static profile (read once), the dynamic sampler (a background thread), one runtime
estimator per (algorithm, model) the node trains, and the link tracker; :meth:`snapshot`
assembles a :class:`~eddl.profiler.profiles.Profile` for the wire.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import TracebackType

import numpy as np
import numpy.typing as npt

from eddl.profiler.config import ProfilerConfig
from eddl.profiler.dynamic import DynamicCollector
from eddl.profiler.estimator import RuntimeEstimator
from eddl.profiler.network import LinkTracker
from eddl.profiler.profiles import (
    ComputeProfile,
    Profile,
    ThroughputEstimate,
    ThroughputSource,
)
from eddl.profiler.sampler import Sampler
from eddl.profiler.sources import HostSources
from eddl.profiler.static import collect_static
from eddl.profiler.throughput import BenchmarkResult, TrainerLike, measure_throughput

__all__ = ["NodeProfiler"]


class NodeProfiler:
    """The profile of this node, kept current. ``clock`` is Unix time (injectable for tests)."""

    def __init__(
        self,
        node_id: str,
        role: str,
        config: ProfilerConfig | None = None,
        sources: HostSources | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config if config is not None else ProfilerConfig()
        src = sources if sources is not None else HostSources()
        self.static = collect_static(node_id, role, src)
        self.sampler = Sampler(
            self.config.period_s, self.config.history, DynamicCollector(src, clock=clock)
        )
        self.links = LinkTracker(self.config.estimator_alpha, self.config.estimator_half_life_s)
        self._clock = clock
        self._runtime: dict[tuple[str, str], RuntimeEstimator] = {}

    def __enter__(self) -> NodeProfiler:
        self.sampler.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.sampler.stop()

    # -- compute ------------------------------------------------------------------------------

    def runtime(self, algorithm: str, model: str) -> RuntimeEstimator:
        """The runtime estimator of (``algorithm``, ``model``), created on first use."""
        if not algorithm or not model:
            raise ValueError("algorithm and model must be non-empty")
        key = (algorithm, model)
        est = self._runtime.get(key)
        if est is None:
            est = RuntimeEstimator(
                alpha=self.config.estimator_alpha, half_life_s=self.config.estimator_half_life_s
            )
            self._runtime[key] = est
        return est

    def benchmark(
        self,
        algorithm: str,
        model: str,
        factory: Callable[[], TrainerLike],
        params: Mapping[str, np.ndarray],
        features: int,
        classes: int,
        dtype: npt.DTypeLike = np.float32,
    ) -> BenchmarkResult:
        """Run the micro-benchmark and make it the prior of the runtime estimator."""
        est = self.runtime(algorithm, model)
        result = measure_throughput(
            factory, params, features, classes, dtype, budget_s=self.config.benchmark_budget_s
        )
        est.set_prior(result.samples_per_second, result.measured_at)
        return result

    def observe_task(
        self, algorithm: str, model: str, samples: int, seconds: float, at: float | None = None
    ) -> None:
        """Record a finished training task: ``samples`` trained in ``seconds``."""
        when = self._clock() if at is None else at
        self.runtime(algorithm, model).observe(samples, seconds, when)

    def compute_profile(self, now: float | None = None) -> ComputeProfile:
        t = self._clock() if now is None else now
        out: list[ThroughputEstimate] = []
        for (algorithm, model), est in sorted(self._runtime.items()):
            rate = est.samples_per_second(t)
            if rate is None:
                continue
            observed = est.observations > 0
            source = ThroughputSource.RUNTIME if observed else ThroughputSource.MICROBENCHMARK
            out.append(
                ThroughputEstimate(
                    algorithm=algorithm,
                    model=model,
                    samples_per_second=rate,
                    confidence=est.confidence(t),
                    observations=est.observations,
                    source=source,
                    measured_at=(est.last_observed_at if observed else est.prior_at) or t,
                )
            )
        return ComputeProfile(tuple(out))

    # -- everything ---------------------------------------------------------------------------

    def snapshot(self, now: float | None = None) -> Profile:
        """The node's profile now (the latest dynamic sample; one is taken if none exists)."""
        t = self._clock() if now is None else now
        dynamic = self.sampler.latest()
        if dynamic is None:
            dynamic = self.sampler.sample_now()
        return Profile(
            static=self.static,
            dynamic=dynamic,
            compute=self.compute_profile(t),
            network=self.links.network_profile(t),
        )
