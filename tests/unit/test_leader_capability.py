"""McuCapabilities: validation of a gateway's McuProfile, and the job fit rule."""

from __future__ import annotations

from dataclasses import replace

import pytest

from eddl.leader import capability
from eddl.leader.capability import McuCapabilities, describe_node, trainable_layers, unable
from eddl.leader.errors import InvalidArgumentError
from eddl.leader.membership import Node, Role
from eddl.mcu.plan import arena_need, tifed_setup
from eddl.proto.v1 import profile_pb2

GOOD = McuCapabilities(
    gateway_id="pi1",
    device="socket://127.0.0.1:4000",
    board="ram64",
    arena_bytes=53_248,
    algorithms=("tifed", "tifed-single"),
    max_layers=4,
    ram_bytes=65_536,
    link_bytes_per_second=35_000.0,
    ticks_per_sample=1234.5,
)
SMALL = {"sizes": [64, 32, 10]}
BIG = {"sizes": [784, 200, 10]}


def node(mcu: McuCapabilities | None = GOOD, node_id: str = "pi1.mcu0") -> Node:
    role = Role.WORKER if mcu is None else Role.MCU
    return Node(node_id, role, 1, 0.0, 0.0, mcu=mcu)


def test_public_surface() -> None:
    assert capability.__all__ == ["McuCapabilities", "describe_node", "trainable_layers", "unable"]


def test_from_proto_keeps_every_field() -> None:
    msg = profile_pb2.McuProfile(
        gateway_id="pi1",
        device="/dev/ttyACM0",
        board="ram64",
        firmware_version="0.3.0",
        ram_bytes=65_536,
        flash_bytes=262_144,
        arena_bytes=53_248,
        max_payload=1024,
        algorithms=["tifed"],
        tick_hz=1_000_000,
        max_layers=4,
        link_bytes_per_second=35_000.0,
        ticks_per_sample=800.0,
        benchmark_model="tifed 64-32-10",
        max_buffer=250,
        float_samples=True,
    )
    caps = McuCapabilities.from_proto(msg)
    assert caps.to_dict() == {
        "gateway_id": "pi1",
        "device": "/dev/ttyACM0",
        "board": "ram64",
        "firmware_version": "0.3.0",
        "ram_bytes": 65_536,
        "flash_bytes": 262_144,
        "arena_bytes": 53_248,
        "max_payload": 1024,
        "algorithms": ["tifed"],
        "tick_hz": 1_000_000,
        "max_layers": 4,
        "link_bytes_per_second": 35_000.0,
        "ticks_per_sample": 800.0,
        "benchmark_model": "tifed 64-32-10",
        "max_buffer": 250,
        "float_samples": True,
    }
    # An older gateway does not send the field: its devices take no float samples.
    msg.ClearField("float_samples")
    assert McuCapabilities.from_proto(msg).float_samples is False


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"arena_bytes": 0}, "arena_bytes must be > 0"),
        ({"arena_bytes": 70_000}, "exceeds mcu.ram_bytes"),
        ({"algorithms": ("tifed", "sgd")}, r"\['sgd'\] unknown"),
        ({"algorithms": ("tifed", "tifed")}, "twice"),
        ({"max_layers": 0}, "max_layers must be 1..4"),
        ({"max_layers": 9}, "max_layers must be 1..4"),
        ({"gateway_id": " "}, "gateway_id is required"),
        ({"board": ""}, "board is required"),
        ({"link_bytes_per_second": float("nan")}, "link_bytes_per_second must be finite"),
        ({"ticks_per_sample": -1.0}, "ticks_per_sample must be finite"),
    ],
)
def test_bad_capabilities_are_refused(change: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        replace(GOOD, **change)  # type: ignore[arg-type]


def test_bad_proto_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="arena_bytes must be > 0"):
        McuCapabilities.from_proto(
            profile_pb2.McuProfile(gateway_id="g", board="b", algorithms=["tifed"], max_layers=2)
        )


def test_python_workers_run_everything() -> None:
    worker = node(None, "w1")
    for algorithm in ("sgd", "lsgd", "tifed", "tifed-single"):
        assert unable(worker, algorithm, BIG, {"batch_size": 25}) is None
    assert trainable_layers(worker, "tifed-single", BIG, {}, 2) == [0, 1]
    assert describe_node(worker) == "w1 (worker)"


def test_mcu_runs_only_its_algorithms_on_models_that_fit_its_arena() -> None:
    mcu = node()
    assert unable(mcu, "tifed", SMALL, {"batch_size": 25}) is None
    assert unable(mcu, "tifed-single", SMALL, {"batch_size": 25}) is None
    assert unable(mcu, "sgd", SMALL, {}) == "runs tifed, tifed-single, not sgd"
    need = arena_need(tifed_setup([784, 200, 10], 25, 25))
    why = unable(mcu, "tifed", BIG, {"batch_size": 25})
    assert why == (
        f"784-200-10 with mini-batches of 25 needs {need:,} arena bytes; the device has 53,248"
    )
    deep = {"sizes": [64, 8, 8, 8, 8, 10]}
    assert unable(mcu, "tifed", deep, {"batch_size": 1}) == "5 layers exceed the device's 4"
    assert describe_node(mcu) == "pi1.mcu0 (mcu ram64)"


SINE = {"sizes": [1, 40, 40, 1], "task": "sine"}
PRESENCE = {"sizes": [24, 32, 16, 2], "task": "presence"}
CHARACTERS = {"sizes": [64, 40, 32, 5], "task": "characters"}


@pytest.mark.parametrize("algorithm", ["tinymetafed", "reptile"])
def test_float_sample_jobs_need_the_float_sample_flag(algorithm: str) -> None:
    old = node(replace(GOOD, algorithms=("lsgd",), firmware_version="0.1.0"))
    new = node(replace(GOOD, algorithms=("lsgd",), firmware_version="0.2.0", float_samples=True))
    for model, kinds in ((SINE, "inputs and targets"), (PRESENCE, "inputs")):
        why = unable(old, algorithm, model, {})
        assert why == (
            f"{algorithm} on the {model['task']} task: the job's samples are float32 ({kinds}); "
            "the device's firmware reads uint8 pixels and class labels only (its HELLO lacks "
            "the float-sample flag of firmware 0.2.0 and later)"
        )
        assert unable(new, algorithm, model, {}) is None
    # Character tasks send uint8 pixels and labels, which every firmware reads.
    assert unable(old, algorithm, CHARACTERS, {}) is None
    # A float lsgd job outside meta-learning is judged the same way.
    floats = {
        "sizes": [4, 8, 1],
        "activations": ["tanh", "linear"],
        "loss": "mse",
        "inputs": "float",
        "targets": "float",
    }
    assert "float32 (inputs and targets)" in str(unable(old, "lsgd", floats, {}))
    assert unable(new, "lsgd", floats, {}) is None


def test_device_without_job_algorithms_is_a_member_no_job_suits() -> None:
    bare = node(replace(GOOD, algorithms=()))
    assert unable(bare, "tifed", SMALL, {"batch_size": 25}) == "runs no job algorithm, not tifed"


def test_single_layer_fit_is_the_fit_of_the_whole_network() -> None:
    assert trainable_layers(node(), "tifed-single", SMALL, {"batch_size": 25}, 2) == [0, 1]
    assert trainable_layers(node(), "tifed-single", BIG, {"batch_size": 25}, 2) == []
    only_full = replace(GOOD, algorithms=("tifed",))
    assert trainable_layers(node(only_full), "tifed-single", SMALL, {"batch_size": 25}, 2) == []
