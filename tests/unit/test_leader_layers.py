"""LayerGroups: single-layer TIFeD's choice of a layer per node."""

from __future__ import annotations

from eddl.leader.layers import LayerGroups


def test_empty_groups_first_then_the_slowest_group() -> None:
    g = LayerGroups(3)
    speeds = {"a": 100.0, "b": 10.0, "c": 50.0, "d": 1.0}
    got = {n: g.assign(n, [0, 1, 2], speeds.get, True)[0] for n in ("a", "b", "c", "d")}
    assert got == {"a": 0, "b": 1, "c": 2, "d": 1}  # d joins b (10), not c (50) or a (100)
    assert g.groups() == {0: ["a"], 1: ["b", "d"], 2: ["c"]}


def test_only_trainable_layers_are_chosen_and_a_release_frees_the_place() -> None:
    g = LayerGroups(2)
    assert g.assign("x", [1], lambda _: 5.0, True) == (1, None)
    assert g.assign("y", [0, 1], lambda _: 5.0, True) == (0, None)
    assert g.release("x") and not g.release("x")
    assert "x" not in g and g.groups() == {0: ["y"], 1: []}


def test_a_provisional_choice_is_made_again_once_measured() -> None:
    g = LayerGroups(2)
    speeds: dict[str, float | None] = {"m1": 40.0, "m0": 40.0, "p": None}
    assert g.assign("m1", [0, 1], speeds.get, True) == (0, None)
    assert g.assign("p", [0, 1], speeds.get, False) == (1, None)  # empty group first
    assert g.assign("m0", [0, 1], speeds.get, True) == (0, None)  # p counts as 40: a tie
    assert g.assign("p", [0, 1], speeds.get, False) == (1, None)  # still unmeasured: kept
    speeds["p"] = 40_000.0
    assert g.assign("p", [0, 1], speeds.get, True) == (1, None)  # measured, but 1 would be empty
    g.release("m1")
    assert g.assign("m1", [0, 1], speeds.get, True) == (0, None)  # 80 vs 40,000
    assert g.assign("m1", [0, 1], speeds.get, True) == (0, None)  # measured and kept
