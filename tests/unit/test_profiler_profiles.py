"""Profile records: validation, and the protobuf round trip (unknown stays unknown)."""

from __future__ import annotations

import dataclasses
import math

import pytest

import eddl.profiler as profiler
from eddl.profiler.convert import (
    dynamic_from_proto,
    dynamic_to_proto,
    link_from_proto,
    profile_from_proto,
    profile_to_proto,
    static_from_proto,
    static_to_proto,
    throughput_from_proto,
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
from eddl.proto.v1 import profile_pb2


def make_static(**over: object) -> StaticProfile:
    values: dict[str, object] = dict(
        node_id="pi-3",
        role="worker",
        hostname="pi-3",
        architecture="aarch64",
        cpu_model=None,
        logical_cores=4,
        physical_cores=None,
        max_frequency_mhz=1500.0,
        total_memory_bytes=4 << 30,
        os_name="Linux",
        os_release="6.1.0",
        python_version="3.11.2",
        numpy_version="1.26.4",
        board_model="Raspberry Pi 4 Model B Rev 1.4",
        has_temperature=True,
        has_throttle_status=True,
    )
    values.update(over)
    return StaticProfile(**values)  # type: ignore[arg-type]


def make_dynamic(**over: object) -> DynamicProfile:
    values: dict[str, object] = dict(
        timestamp=1_700_000_000.0,
        cpu_percent=37.5,
        load_average_1m=1.5,
        load_average_5m=None,
        load_average_15m=None,
        memory_available_bytes=3 << 30,
        memory_percent=20.0,
        temperature_celsius=61.3,
        throttled=False,
        throttle_flags=0x50000,
        battery_percent=None,
        battery_plugged=None,
        process_rss_bytes=80 << 20,
        process_cpu_percent=150.0,
    )
    values.update(over)
    return DynamicProfile(**values)  # type: ignore[arg-type]


def make_throughput() -> ThroughputEstimate:
    return ThroughputEstimate("lsgd", "784-40-32-10", 1234.5, 0.8, 4, ThroughputSource.RUNTIME, 1e9)


def make_link() -> LinkEstimate:
    return LinkEstimate("10.0.0.1:50060", 0.002, 1e6, None, LinkSource.PASSIVE, 1e9, 0.5, 3)


def test_public_api_is_explicit() -> None:
    assert sorted(profiler.__all__) == sorted(set(profiler.__all__))
    for name in profiler.__all__:
        assert hasattr(profiler, name), name


@pytest.mark.parametrize(
    ("cls", "proto"),
    [
        (StaticProfile, profile_pb2.StaticProfile),
        (DynamicProfile, profile_pb2.DynamicProfile),
        (ThroughputEstimate, profile_pb2.ThroughputEstimate),
        (LinkEstimate, profile_pb2.LinkEstimate),
    ],
)
def test_dataclass_and_message_have_the_same_fields(cls: type, proto: type) -> None:
    assert {f.name for f in dataclasses.fields(cls)} == set(proto.DESCRIPTOR.fields_by_name)


def test_full_profile_round_trips_through_protobuf() -> None:
    p = Profile(
        static=make_static(),
        dynamic=make_dynamic(),
        compute=ComputeProfile((make_throughput(),)),
        network=NetworkProfile((make_link(),)),
    )
    wire = profile_pb2.Profile.FromString(profile_to_proto(p).SerializeToString())
    assert profile_from_proto(wire) == p


def test_unknown_values_stay_unknown_on_the_wire() -> None:
    msg = static_to_proto(make_static(cpu_model=None, physical_cores=None, max_frequency_mhz=None))
    assert not msg.HasField("cpu_model")
    assert not msg.HasField("max_frequency_mhz")
    back = static_from_proto(msg)
    assert back.cpu_model is None and back.physical_cores is None
    assert back.max_frequency_mhz is None

    dyn = dynamic_to_proto(make_dynamic(temperature_celsius=None, throttled=None))
    assert not dyn.HasField("temperature_celsius") and not dyn.HasField("throttled")
    # A known zero / False is not "unknown".
    dyn0 = dynamic_to_proto(make_dynamic(throttled=False, throttle_flags=0))
    assert dyn0.HasField("throttled") and dyn0.HasField("throttle_flags")
    assert dynamic_from_proto(dyn0).throttle_flags == 0


def test_profile_without_dynamic_round_trips() -> None:
    p = Profile(static=make_static())
    assert profile_from_proto(profile_to_proto(p)) == p


@pytest.mark.parametrize(
    "over",
    [
        {"cpu_percent": math.nan},
        {"cpu_percent": 101.0},
        {"memory_percent": -1.0},
        {"load_average_1m": math.inf},
        {"process_rss_bytes": -5},
        {"battery_percent": 120.0},
        {"temperature_celsius": -400.0},
        {"throttle_flags": -1},
        {"timestamp": math.nan},
    ],
)
def test_bad_dynamic_values_are_refused(over: dict[str, object]) -> None:
    with pytest.raises(ProfileError):
        make_dynamic(**over)


@pytest.mark.parametrize(
    "over",
    [{"logical_cores": 0}, {"total_memory_bytes": -1}, {"max_frequency_mhz": math.nan}],
)
def test_bad_static_values_are_refused(over: dict[str, object]) -> None:
    with pytest.raises(ProfileError):
        make_static(**over)


def test_bad_messages_are_refused() -> None:
    with pytest.raises(ProfileError, match="static"):
        profile_from_proto(profile_pb2.Profile())
    msg = profile_pb2.DynamicProfile()
    msg.CopyFrom(dynamic_to_proto(make_dynamic()))
    msg.cpu_percent = math.nan
    with pytest.raises(ProfileError, match="cpu_percent"):
        dynamic_from_proto(msg)
    t = profile_pb2.ThroughputEstimate(algorithm="sgd", model="4-2", samples_per_second=10.0)
    with pytest.raises(ProfileError, match="source"):
        throughput_from_proto(t)  # source left UNSPECIFIED
    t.source = profile_pb2.THROUGHPUT_SOURCE_RUNTIME
    t.samples_per_second = 0.0
    with pytest.raises(ProfileError, match="samples_per_second"):
        throughput_from_proto(t)
    with pytest.raises(ProfileError, match="source"):
        link_from_proto(profile_pb2.LinkEstimate(peer="a:1", measured_at=1.0))
    with pytest.raises(ProfileError, match="peer"):
        link_from_proto(profile_pb2.LinkEstimate(source=profile_pb2.LINK_SOURCE_PROBE))


def test_enum_values_match_the_wire() -> None:
    assert ThroughputSource.MICROBENCHMARK.value == profile_pb2.THROUGHPUT_SOURCE_MICROBENCHMARK
    assert ThroughputSource.RUNTIME.value == profile_pb2.THROUGHPUT_SOURCE_RUNTIME
    assert LinkSource.PROBE.value == profile_pb2.LINK_SOURCE_PROBE
    assert LinkSource.PASSIVE.value == profile_pb2.LINK_SOURCE_PASSIVE
