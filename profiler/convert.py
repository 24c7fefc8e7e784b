"""Profile dataclasses to ``eddl.v1`` protobuf messages and back.

Field names are the same on both sides. ``None`` ("unknown") maps to an unset proto3
``optional`` field and back, so "unknown" survives the wire and is never read as 0. Messages
coming in are checked by the dataclasses' own validation: a NaN, a negative count, an
unspecified source or a profile without its static part raises :class:`ProfileError`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from google.protobuf.message import Message

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

__all__ = [
    "dynamic_from_proto",
    "dynamic_to_proto",
    "link_from_proto",
    "link_to_proto",
    "profile_from_proto",
    "profile_to_proto",
    "static_from_proto",
    "static_to_proto",
    "throughput_from_proto",
    "throughput_to_proto",
]

T = TypeVar("T")
_SKIP = frozenset({"source"})


def _fill(obj: Any, msg: Message) -> None:
    for f in dataclasses.fields(obj):
        if f.name in _SKIP:
            continue
        value = getattr(obj, f.name)
        if value is not None:
            setattr(msg, f.name, value)


def _read(cls: type[T], msg: Message, **extra: Any) -> T:
    kwargs: dict[str, Any] = {}
    by_name = msg.DESCRIPTOR.fields_by_name
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in extra:
            continue
        desc = by_name[f.name]
        if desc.has_presence and not msg.HasField(f.name):
            kwargs[f.name] = None
        else:
            kwargs[f.name] = getattr(msg, f.name)
    kwargs.update(extra)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - field sets are kept equal by the tests
        raise ProfileError(f"{cls.__name__}: {exc}") from exc


def static_to_proto(p: StaticProfile) -> profile_pb2.StaticProfile:
    msg = profile_pb2.StaticProfile()
    _fill(p, msg)
    return msg


def static_from_proto(msg: profile_pb2.StaticProfile) -> StaticProfile:
    return _read(StaticProfile, msg)


def dynamic_to_proto(p: DynamicProfile) -> profile_pb2.DynamicProfile:
    msg = profile_pb2.DynamicProfile()
    _fill(p, msg)
    return msg


def dynamic_from_proto(msg: profile_pb2.DynamicProfile) -> DynamicProfile:
    return _read(DynamicProfile, msg)


def throughput_to_proto(t: ThroughputEstimate) -> profile_pb2.ThroughputEstimate:
    msg = profile_pb2.ThroughputEstimate()
    _fill(t, msg)
    msg.source = profile_pb2.ThroughputSource.ValueType(t.source.value)
    return msg


def throughput_from_proto(msg: profile_pb2.ThroughputEstimate) -> ThroughputEstimate:
    try:
        source = ThroughputSource(msg.source)
    except ValueError as exc:
        raise ProfileError(f"throughput source {msg.source} is unspecified or unknown") from exc
    return _read(ThroughputEstimate, msg, source=source)


def link_to_proto(link: LinkEstimate) -> profile_pb2.LinkEstimate:
    msg = profile_pb2.LinkEstimate()
    _fill(link, msg)
    msg.source = profile_pb2.LinkSource.ValueType(link.source.value)
    return msg


def link_from_proto(msg: profile_pb2.LinkEstimate) -> LinkEstimate:
    try:
        source = LinkSource(msg.source)
    except ValueError as exc:
        raise ProfileError(f"link source {msg.source} is unspecified or unknown") from exc
    return _read(LinkEstimate, msg, source=source)


def profile_to_proto(p: Profile) -> profile_pb2.Profile:
    msg = profile_pb2.Profile(static=static_to_proto(p.static))
    if p.dynamic is not None:
        msg.dynamic.CopyFrom(dynamic_to_proto(p.dynamic))
    msg.compute.throughput.extend(throughput_to_proto(t) for t in p.compute.throughput)
    msg.network.links.extend(link_to_proto(link) for link in p.network.links)
    return msg


def profile_from_proto(msg: profile_pb2.Profile) -> Profile:
    if not msg.HasField("static"):
        raise ProfileError("profile has no static part")
    return Profile(
        static=static_from_proto(msg.static),
        dynamic=dynamic_from_proto(msg.dynamic) if msg.HasField("dynamic") else None,
        compute=ComputeProfile(tuple(throughput_from_proto(t) for t in msg.compute.throughput)),
        network=NetworkProfile(tuple(link_from_proto(link) for link in msg.network.links)),
    )
