"""Faults on the link: a proxy flips bits, truncates, drops and injects bytes between driver and
device. The driver recovers, no command is applied twice, and the weights equal a clean run."""

from __future__ import annotations

import time

import numpy as np
import pytest

from eddl.learn import tifed
from eddl.mcu.driver import Device, LinkError
from eddl.mcu.faults import FaultPlan, FaultProxy
from eddl.mcu.launch import Launched, start_sim
from eddl.mcu.protocol import Algo, SetupSpec
from eddl.mcu.session import DeviceModel

CFG = tifed.TifedConfig(sizes=(48, 16, 10), lr_inv=2048, batch_size=5, feedback_seed=3)
ROUNDS = 4


def _session(url: str) -> tuple[dict[str, np.ndarray], int, Device]:
    """SETUP, ship B, then ROUNDS x (LOAD samples, TRAIN 2 epochs); return weights and samples."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(ROUNDS, 30, CFG.sizes[0])).astype(np.uint8)
    y = rng.integers(0, 10, size=(ROUNDS, 30))
    with Device.open(url, timeout=0.25, retries=30) as dev:
        model = DeviceModel(dev, SetupSpec(Algo.TIFED, CFG.sizes, capacity=30, max_batch=5))
        model.load_feedback(tifed.feedback_matrices(CFG))
        for r in range(ROUNDS):
            model.load_samples(x[r], y[r])
            dev.train(30, batch=5, epochs=2, lr_inv=CFG.lr_inv)
        return model.read_params(), dev.stats().samples, dev


@pytest.fixture(scope="module")
def clean(sim_exe: object) -> dict[str, np.ndarray]:
    with start_sim(lifetime=60.0) as device:
        params, samples, _ = _session(device.url)
    assert samples == ROUNDS * 30 * 2
    return params


@pytest.mark.slow
@pytest.mark.parametrize(
    "kinds,seed",
    [
        (("flip",), 1),
        (("truncate",), 2),
        (("drop",), 3),
        (("inject",), 4),
        (("flip", "truncate", "drop", "inject"), 5),
    ],
)
def test_driver_recovers_and_weights_equal_a_clean_run(
    sim: Launched, clean: dict[str, np.ndarray], kinds: tuple[str, ...], seed: int
) -> None:
    plan = FaultPlan(rate=0.3, kinds=kinds, seed=seed, max_faults=40)
    with FaultProxy.for_url(sim.url, plan, lifetime=60.0) as proxy:
        params, samples, dev = _session(proxy.url)
    assert sum(plan.counts[k] for k in kinds) > 0, "the proxy injected no fault"
    assert dev.link.retransmits > 0
    assert samples == ROUNDS * 30 * 2  # every TRAIN applied exactly once
    for name, value in clean.items():
        np.testing.assert_array_equal(params[name], value, err_msg=name)


@pytest.mark.slow
def test_faults_only_towards_the_host_exercise_the_reply_cache(
    sim: Launched, clean: dict[str, np.ndarray]
) -> None:
    """Replies lost after the device applied a command: retries must be answered from cache."""
    plan = FaultPlan(rate=0.4, kinds=("drop", "flip"), seed=9, to_device=False, max_faults=30)
    with FaultProxy.for_url(sim.url, plan, lifetime=60.0) as proxy:
        params, samples, _ = _session(proxy.url)
    with Device.open(sim.url) as dev:
        assert dev.stats().duplicates > 0
    assert samples == ROUNDS * 30 * 2
    for name, value in clean.items():
        np.testing.assert_array_equal(params[name], value, err_msg=name)


def test_dead_link_raises_after_bounded_retries(sim: Launched) -> None:
    with Device.open(sim.url) as dev:
        dev.setup(SetupSpec(Algo.TIFED, CFG.sizes, capacity=4))
    plan = FaultPlan(rate=1.0, kinds=("drop",), max_faults=10_000)
    with FaultProxy.for_url(sim.url, plan, lifetime=30.0) as proxy:
        start = time.monotonic()
        with pytest.raises(LinkError):
            Device.open(proxy.url, timeout=0.1, retries=3)
        assert time.monotonic() - start < 10.0
    assert plan.counts["drop"] == 4  # 1 try + 3 retries, nothing more


@pytest.mark.qemu
@pytest.mark.slow
def test_faults_on_qemu_link(qemu: Launched, clean: dict[str, np.ndarray]) -> None:
    plan = FaultPlan(rate=0.2, seed=11, max_faults=20)
    with FaultProxy.for_url(qemu.url, plan, lifetime=120.0) as proxy:
        params, _, dev = _session(proxy.url)
    assert sum(plan.counts[k] for k in ("flip", "truncate", "drop", "inject")) > 0
    for name, value in clean.items():
        np.testing.assert_array_equal(params[name], value, err_msg=name)
    assert dev.link.retransmits > 0
