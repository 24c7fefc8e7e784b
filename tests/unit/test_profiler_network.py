"""Passive link estimates, the node profiler facade, config, and the shaped-link helper."""

from __future__ import annotations

from pathlib import Path

import pytest

from eddl.config import ConfigError, load_config
from eddl.learn.lsgd import LSGDTrainer
from eddl.learn.model import MLPSpec, init_params
from eddl.profiler.config import ProfilerConfig
from eddl.profiler.netlab import shaped_link
from eddl.profiler.network import LinkTracker
from eddl.profiler.node import NodeProfiler
from eddl.profiler.probe_client import ProbeResult
from eddl.profiler.profiles import LinkSource, ThroughputSource
from eddl.profiler.render import profile_table, profile_to_dict


def probe_result(peer: str = "10.0.0.1:50060", rate: float = 1e6) -> ProbeResult:
    return ProbeResult(peer, 0.01, rate, rate * 2, (0.01,), (rate,), (rate * 2,), 100.0)


def test_passive_transfers_give_a_passive_estimate() -> None:
    links = LinkTracker()
    links.observe_transfer("a:1", "upload", 1_000_000, 2.0, at=10.0)
    (est,) = links.estimates(now=10.0)
    assert est.source is LinkSource.PASSIVE and est.peer == "a:1"
    assert est.upload_bytes_per_second == pytest.approx(500_000.0)
    assert est.download_bytes_per_second is None  # no download seen: unknown
    assert est.rtt_seconds is None and est.observations == 1


def test_probe_is_kept_and_becomes_the_passive_prior() -> None:
    links = LinkTracker()
    links.record_probe(probe_result(rate=1e6))
    (probe,) = links.estimates(now=100.0)
    assert probe.source is LinkSource.PROBE and probe.upload_bytes_per_second == 1e6
    # A transfer of 0.51 s including one 10 ms RTT: 500 kB in 0.5 s of actual transfer.
    links.observe_transfer("10.0.0.1:50060", "upload", 500_000, 0.51, at=101.0)
    probe, passive = links.estimates(now=101.0)
    assert passive.source is LinkSource.PASSIVE
    assert passive.rtt_seconds == 0.01
    assert passive.upload_bytes_per_second == pytest.approx(1e6, rel=0.01)


def test_bad_transfers_are_refused() -> None:
    links = LinkTracker()
    with pytest.raises(ValueError):
        links.observe_transfer("", "upload", 10, 1.0, at=0.0)
    with pytest.raises(ValueError):
        links.observe_transfer("a:1", "sideways", 10, 1.0, at=0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        links.observe_transfer("a:1", "upload", 10, 0.0, at=0.0)
    with pytest.raises(ValueError):
        links.observe_transfer("a:1", "upload", -10, 1.0, at=0.0)
    assert links.estimates(now=0.0) == []


def test_node_profiler_snapshot_holds_every_part() -> None:
    spec = MLPSpec((784, 40, 32, 10), ("tanh", "tanh", "sigmoid"), "bce")
    clock = [1000.0]
    node = NodeProfiler(
        "n1", "worker", ProfilerConfig(benchmark_budget_s=0.2), clock=lambda: clock[0]
    )
    node.benchmark(
        "lsgd", "784-40-32-10", lambda: LSGDTrainer(spec, 0.01), init_params(spec, 0), 784, 10
    )
    snap = node.snapshot()
    (t,) = snap.compute.throughput
    assert t.source is ThroughputSource.MICROBENCHMARK and t.confidence == 0.0
    node.observe_task("lsgd", "784-40-32-10", samples=500, seconds=1.0)
    node.links.record_probe(probe_result())
    snap = node.snapshot()
    (t,) = snap.compute.throughput
    assert t.source is ThroughputSource.RUNTIME and t.observations == 1 and t.confidence > 0
    assert snap.static.node_id == "n1" and snap.dynamic is not None
    assert [link.source for link in snap.network.links] == [LinkSource.PROBE]
    as_dict = profile_to_dict(snap)
    assert as_dict["compute"][0]["source"] == "runtime"
    assert profile_table(snap).row_count > 20


def test_node_profiler_samples_in_the_background() -> None:
    with NodeProfiler("n1", "worker", ProfilerConfig(period_s=0.05)) as node:
        assert node.sampler.running
        assert node.snapshot().dynamic is not None
    assert not node.sampler.running


def test_profiler_config_from_toml_and_env(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[profiler]\nperiod_s = 2.5\nprobe_payload_bytes = 4096\n")
    cfg = load_config(ProfilerConfig, "profiler", path, environ={"EDDL_PROFILER_HISTORY": "7"})
    assert cfg.period_s == 2.5 and cfg.history == 7
    assert cfg.probe_config().payload_bytes == 4096


@pytest.mark.parametrize(
    "text",
    [
        "[profiler]\nperiod = 2\n",  # unknown key
        "[profiler]\nperiod_s = -1.0\n",
        "[profiler]\nestimator_alpha = 2.0\n",
        "[profiler]\nprobe_payload_bytes = 0\n",
        "[profiler]\nprobe_timeout_s = 0.0\n",
    ],
)
def test_bad_profiler_config_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_config(ProfilerConfig, "profiler", path, environ={})


@pytest.mark.parametrize("rate", [0.0, -8.0, 1e9])
def test_shaped_link_refuses_absurd_rates_before_touching_the_system(rate: float) -> None:
    with pytest.raises(ValueError, match="rate_mbit"), shaped_link(rate):
        pass
