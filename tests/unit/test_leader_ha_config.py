"""A candidate's configuration is checked up front, and ``PromotionGate`` keeps an elected
candidate from acting as root until it took its term up."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from eddl.config import ConfigError
from eddl.leader.config import LeaderConfig
from eddl.leader.ha import PromotionGate
from eddl.leader.main import build_parser
from eddl.leader.ports import Leadership, LeadershipState


def test_a_candidate_needs_a_valid_coordinator_and_an_address() -> None:
    ok = LeaderConfig(join_token="t", coordinator="etcd://a:2379,b:2379", advertise="a:50051")
    assert ok.lease_ttl_s == 3 and ok.min_replicas == 1
    bad = [
        {"coordinator": "http://a:2379", "advertise": "a:1"},
        {"coordinator": "etcd://a:2379"},
        {"coordinator": "etcd://a:2379", "advertise": "a:1", "follow": "b:1"},
        {"coordinator": "etcd://a:2379", "advertise": "a:1", "lease_ttl_s": 1},
        {"coordinator": "etcd://a:2379", "advertise": "a:1", "min_replicas": -1},
    ]
    for values in bad:
        with pytest.raises(ConfigError):
            LeaderConfig(join_token="t", **values)  # type: ignore[arg-type]


def test_the_candidate_flags_parse() -> None:
    args = build_parser().parse_args(
        ["--coordinator", "etcd://a:2379", "--advertise", "a:1", "--lease-ttl", "5",
         "--min-replicas", "2"]
    )  # fmt: skip
    assert (args.coordinator, args.advertise, args.lease_ttl_s, args.min_replicas) == (
        "etcd://a:2379", "a:1", 5, 2,
    )  # fmt: skip


class Elected(Leadership):
    def __init__(self) -> None:
        self.now = LeadershipState(7, True, "me:1")

    def state(self) -> LeadershipState:
        return self.now

    def subscribe(self, listener: Callable[[LeadershipState], None]) -> Callable[[], None]:
        return lambda: None


def test_an_elected_candidate_is_root_only_once_promoted_in_that_term() -> None:
    inner = Elected()
    gate = PromotionGate(inner)
    assert gate.state() == LeadershipState(7, False, "")
    gate.promoted_term = 7
    assert gate.is_root() and gate.root_hint() == "me:1"
    inner.now = LeadershipState(9, True, "me:1")  # a later term needs its own promotion
    assert not gate.is_root()
    inner.now = LeadershipState(9, False, "other:1")
    assert gate.state() == inner.now
