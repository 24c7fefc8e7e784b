"""eddl.mcu.plan without a device: capacities and the reasons a job does not fit."""

from __future__ import annotations

from eddl.mcu.plan import arena_need, largest_capacity, tifed_fit, tifed_setup


def test_need_grows_with_the_buffer_by_whole_rows() -> None:
    a = arena_need(tifed_setup((64, 32, 10), 25, 25))
    b = arena_need(tifed_setup((64, 32, 10), 25, 50))
    # 25 more rows of 64 pixels and 25 more labels, each run 8-byte aligned.
    assert b - a in range(25 * 65, 25 * 65 + 16)


def test_largest_capacity() -> None:
    sizes = (64, 32, 10)
    arena = 53248
    cap = largest_capacity(sizes, 25, arena, 400)
    assert cap % 25 == 0 and 25 <= cap <= 400
    assert arena_need(tifed_setup(sizes, 25, cap)) <= arena
    if cap < 400:
        assert arena_need(tifed_setup(sizes, 25, cap + 25)) > arena
    assert largest_capacity(sizes, 25, 100, 400) == 0
    assert largest_capacity(sizes, 25, 10**9, 60) == 50


def test_fit_reasons() -> None:
    kw = {"arena_bytes": 53248, "algorithms": ["tifed", "tifed-single"]}
    assert tifed_fit("tifed", {"sizes": [64, 32, 10]}, {"batch_size": 25}, **kw) is None
    assert "not sgd" in str(tifed_fit("sgd", {"sizes": [64, 32, 10]}, {}, **kw))
    too_big = tifed_fit("tifed", {"sizes": [784, 200, 10]}, {}, **kw)
    assert too_big is not None and "784-200-10" in too_big and "53,248" in too_big
    assert "layers" in str(tifed_fit("tifed", {"sizes": [4, 4, 4, 4, 4, 2]}, {}, **kw))
    assert "batch_size" in str(tifed_fit("tifed", {"sizes": [64, 10]}, {"batch_size": 0}, **kw))
    assert "sizes" in str(tifed_fit("tifed", {}, {}, **kw))
