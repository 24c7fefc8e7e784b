"""eddl.profiler: what each node can really do right now.

Public API (everything below is re-exported here):

* Records (``profiles``): :class:`StaticProfile`, :class:`DynamicProfile`,
  :class:`ThroughputEstimate`, :class:`ComputeProfile`, :class:`LinkEstimate`,
  :class:`NetworkProfile`, :class:`Profile`; unknown values are ``None``; bad values raise
  :class:`ProfileError`. ``convert`` maps them to/from ``eddl.proto.v1.profile_pb2``
  (:func:`profile_to_proto`, :func:`profile_from_proto`, and one pair per part).
* :class:`NodeProfiler` (``node``): the one object a daemon keeps. ``with NodeProfiler(id, role,
  config) as p:`` samples the dynamic profile in the background; ``p.benchmark(...)`` runs the
  compute micro-benchmark, ``p.observe_task(algorithm, model, samples, seconds)`` feeds the
  runtime estimator, ``p.links`` tracks link figures, ``p.snapshot()`` returns a
  :class:`Profile`.
* Compute: :func:`measure_throughput` (``throughput``: the job's real trainer on synthetic data,
  ~1 s) and :class:`RuntimeEstimator` (``estimator``: ``observe(samples, seconds, at)``,
  ``samples_per_second(now)``, ``confidence(now)`` in [0, 1], micro-benchmark as prior).
* Network: the ``Probe`` service (``probe``: :func:`add_probe_servicer` for a daemon's
  ``grpc.aio`` server, :func:`start_probe_server`), its client (``probe_client``:
  :class:`ProbeClient`, :func:`probe_peer`, :class:`ProbeConfig`, :class:`ProbeError` and its
  subclasses :class:`ProbeTimeout` / :class:`ProbeUnavailable` / :class:`ProbeRefused`), and
  :class:`LinkTracker` (``network``: passive estimates from real transfers plus probe results).
* :class:`ProfilerConfig` (``config``): the ``[profiler]`` settings.

Internals: ``sources`` (reads /proc, /sys and the Raspberry Pi firmware under a root directory),
``static`` / ``dynamic`` (the two collectors), ``sampler`` (the background thread), ``render``
(table and JSON for ``eddl profile``), ``__main__`` (``python -m eddl.profiler serve|probe``),
``netlab`` (namespaces + shaped veth pair, for the probe's tests and benchmark).
See docs/profiler.md.
"""

from eddl.profiler.config import ProfilerConfig
from eddl.profiler.convert import (
    dynamic_from_proto,
    dynamic_to_proto,
    link_from_proto,
    link_to_proto,
    profile_from_proto,
    profile_to_proto,
    static_from_proto,
    static_to_proto,
    throughput_from_proto,
    throughput_to_proto,
)
from eddl.profiler.dynamic import DynamicCollector
from eddl.profiler.estimator import RateEstimator, RuntimeEstimator, TransferEstimator
from eddl.profiler.network import LinkTracker
from eddl.profiler.node import NodeProfiler
from eddl.profiler.probe import ProbeLimits, ProbeServicer, add_probe_servicer, start_probe_server
from eddl.profiler.probe_client import (
    ProbeClient,
    ProbeConfig,
    ProbeError,
    ProbeRefused,
    ProbeResult,
    ProbeTimeout,
    ProbeUnavailable,
    probe_peer,
)
from eddl.profiler.profiles import (
    ComputeProfile,
    DynamicProfile,
    LinkEstimate,
    LinkSource,
    NetworkProfile,
    Profile,
    ProfileError,
    StaticProfile,
    ThroughputEstimate,
    ThroughputSource,
)
from eddl.profiler.sampler import Sampler
from eddl.profiler.static import collect_static
from eddl.profiler.throughput import BenchmarkResult, measure_throughput

__all__ = [
    "BenchmarkResult",
    "ComputeProfile",
    "DynamicCollector",
    "DynamicProfile",
    "LinkEstimate",
    "LinkSource",
    "LinkTracker",
    "NetworkProfile",
    "NodeProfiler",
    "ProbeClient",
    "ProbeConfig",
    "ProbeError",
    "ProbeLimits",
    "ProbeRefused",
    "ProbeResult",
    "ProbeServicer",
    "ProbeTimeout",
    "ProbeUnavailable",
    "Profile",
    "ProfileError",
    "ProfilerConfig",
    "RateEstimator",
    "RuntimeEstimator",
    "Sampler",
    "StaticProfile",
    "ThroughputEstimate",
    "ThroughputSource",
    "TransferEstimator",
    "add_probe_servicer",
    "collect_static",
    "dynamic_from_proto",
    "dynamic_to_proto",
    "link_from_proto",
    "link_to_proto",
    "measure_throughput",
    "probe_peer",
    "profile_from_proto",
    "profile_to_proto",
    "start_probe_server",
    "static_from_proto",
    "static_to_proto",
    "throughput_from_proto",
    "throughput_to_proto",
]
