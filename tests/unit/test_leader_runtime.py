"""The real job runtime (eddl.learn + shipped data), and a whole digits job driven through the
coordinator with real local training on in-process workers."""

from __future__ import annotations

import numpy as np
import pytest

from eddl.data import load_dataset
from eddl.leader import __all__ as leader_all
from eddl.leader.coordinator import Coordinator
from eddl.leader.errors import JobSpecError
from eddl.leader.events import EventKind
from eddl.leader.jobs import JobSpec
from eddl.leader.membership import NodeProfile
from eddl.leader.run import Wait
from eddl.leader.runtime import build_runtime
from eddl.leader.store import MemoryStore
from eddl.learn.algorithms import get_algorithm
from tests.unit.test_leader_support import Clock


def job(**kw: object) -> JobSpec:
    return JobSpec.from_mapping({"job_id": "j", "rounds": 1, **kw})


@pytest.mark.parametrize(
    ("algorithm", "model", "sizes", "rule"),
    [
        ("sgd", {}, [64, 40, 32, 10], "fedavg"),
        ("lsgd", {"hidden": [16]}, [64, 16, 10], "fedavg"),
        ("tifed-single", {}, [64, 64, 10], "intmean"),
    ],
)
def test_runtime_fills_the_model_from_the_dataset(
    algorithm: str, model: dict[str, object], sizes: list[int], rule: str
) -> None:
    rt = build_runtime(job(algorithm=algorithm, model=model))
    assert rt.info["model"]["sizes"] == sizes and rt.sync_rule == rule
    assert rt.num_train == len(load_dataset("digits").y_train)
    assert rt.single_layer == (algorithm == "tifed-single")
    assert 0.0 <= rt.evaluate(rt.initial_params) <= 1.0  # type: ignore[misc]
    assert rt.samples is not None
    x, y = rt.samples(np.array([0, 1]))
    assert x.dtype == np.uint8 and x.shape == (2, 64) and y.shape == (2,)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"dataset": "nope"}, "unknown dataset"),
        ({"algorithm": "adam"}, "unknown algorithm"),
        ({"model": {"sizes": [3, 10]}}, "must start with 64 inputs"),
        ({"model": {"hidden": [0]}}, "positive ints"),
        ({"model": {"hidden": [8], "sizes": [64, 8, 10]}}, "not both"),
        ({"hyper": {"momentum": 0.9}}, "momentum"),
        ({"algorithm": "tifed", "model": {"sizes": [64, 10], "act": "x"}}, "unknown model key"),
    ],
)
def test_bad_jobs_are_refused_with_a_spec_error(kw: dict[str, object], match: str) -> None:
    with pytest.raises(JobSpecError, match=match):
        build_runtime(job(**kw))


@pytest.mark.parametrize(
    ("algorithm", "hyper"), [("sgd", {"lr": 0.1, "batch_size": 8}), ("tifed-single", {})]
)
def test_a_digits_job_reaches_90_percent_through_the_coordinator(
    algorithm: str, hyper: dict[str, object]
) -> None:
    clock = Clock()
    store = MemoryStore()
    c = Coordinator(store, now=clock)
    nodes = [f"w{i}" for i in range(3)]
    for n, sps in zip(nodes, (300.0, 200.0, 100.0), strict=True):
        c.join(n, "", profile=NodeProfile(benchmark_sps=sps))
    c.submit_job(
        {
            "job_id": "j",
            "algorithm": algorithm,
            "hyper": hyper,
            "target_accuracy": 0.9,
            "rounds": 200,
            "aggregation": "sync",
            "max_epochs": 20.0,
        }
    )
    stored = store.job("j")
    assert stored is not None
    spec = JobSpec.from_mapping(stored.spec)  # what a worker gets: the resolved model
    algo = get_algorithm(spec.algorithm, spec.model, spec.hyper)
    data = load_dataset("digits")
    for step in range(500):  # bounded: a few dozen rounds are enough
        if c.job_status("j")["status"] != "running":
            break
        for n in nodes:
            t = c.next_task(n)
            if isinstance(t, Wait):
                continue
            params = {k: v.copy() for k, v in c.model("j", t.base_version).params.items()}
            algo.make_trainer(t.layer).train(
                params,
                algo.prepare_inputs(data.x_train[t.indexes]),
                data.y_train[t.indexes],
                rng=np.random.default_rng(step),
            )
            if t.layer is not None:  # single-layer: only this layer travels back
                params = {k: params[k] for k in (f"W{t.layer}", f"b{t.layer}")}
            c.submit_update(n, t.task_id, params, job_id="j", base_version=t.base_version)
        clock.advance(1.0)
    status = c.job_status("j")
    assert status["status"] == "completed", status
    assert status["accuracy"] >= 0.9
    versions = [e.data["version"] for e in c.events("j") if e.kind is EventKind.MODEL_UPDATED]
    assert versions == list(range(1, status["version"] + 1))


def test_public_surface_is_explicit() -> None:
    import eddl.leader as leader

    assert sorted(leader_all) == sorted(set(leader_all))
    for name in leader_all:
        assert hasattr(leader, name), name
