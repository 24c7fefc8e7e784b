"""The host's arena plan (eddl.mcu.plan) against what SETUP really uses on the device."""

from __future__ import annotations

import pytest

from eddl.mcu.driver import Device, DeviceError
from eddl.mcu.launch import Launched
from eddl.mcu.plan import arena_need, largest_capacity, tifed_fit, tifed_setup
from eddl.mcu.protocol import Act, Algo, ErrorCode, Loss, SetupSpec

SPECS = [
    tifed_setup((64, 32, 10), 25, 50),
    tifed_setup((784, 40, 32, 10), 7, 21),
    tifed_setup((5, 3, 3, 3, 2), 1, 1),
    SetupSpec(Algo.LSGD, (64, 16, 10), 4, activations=(Act.TANH, Act.SIGMOID), loss=Loss.BCE),
    SetupSpec(Algo.SGD, (64, 9, 10), 12, 3, activations=(Act.TANH, Act.SIGMOID), loss=Loss.BCE),
    SetupSpec(Algo.LSGD_Q8, (30, 17, 10), 5, activations=(Act.TANH, Act.SIGMOID), loss=Loss.BCE),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.algo.name}-{s.sizes}")
def test_plan_matches_the_firmware(sim: Launched, spec: SetupSpec) -> None:
    with Device.open(sim.url) as dev:
        used, _ = dev.setup(spec)
    assert used == arena_need(spec)


def test_largest_capacity_is_the_edge_of_what_setup_accepts(sim: Launched) -> None:
    sizes = (64, 32, 10)
    with Device.open(sim.url) as dev:
        arena = dev.hello().arena_bytes
        # Pretend the device is smaller: the plan's edge must be where the arena ends.
        small = arena_need(tifed_setup(sizes, 25, 100)) + 10
        cap = largest_capacity(sizes, 25, small, 10_000)
        assert cap == 100
        assert arena_need(tifed_setup(sizes, 25, cap + 25)) > small
        used, _ = dev.setup(tifed_setup(sizes, 25, cap))
        assert used <= small <= arena


def test_a_model_past_the_arena_is_refused_by_both(sim: Launched) -> None:
    with Device.open(sim.url) as dev:
        arena = dev.hello().arena_bytes
        width = 1
        while arena_need(tifed_setup((784, width, 10), 1, 1)) <= arena:
            width *= 2
        spec = tifed_setup((784, width, 10), 1, 1)
        reason = tifed_fit(
            "tifed",
            {"sizes": list(spec.sizes)},
            {"batch_size": 1},
            arena_bytes=arena,
            algorithms=["tifed"],
        )
        assert reason is not None and "arena bytes" in reason
        with pytest.raises(DeviceError) as err:
            dev.setup(spec)
        assert err.value.code == ErrorCode.NO_MEMORY
