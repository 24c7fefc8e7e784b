"""eddl.mcu.plan without a device: capacities and the reasons a job does not fit."""

from __future__ import annotations

from eddl.mcu.plan import (
    MCU_ALGORITHMS,
    arena_need,
    job_fit,
    job_setup,
    largest_capacity,
    largest_job_capacity,
    offered_algorithms,
    tifed_fit,
    tifed_setup,
)


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


FLOAT_MODEL = {"sizes": [64, 32, 10], "activations": ["tanh", "sigmoid"], "loss": "bce"}


def test_a_device_offers_the_algorithms_of_the_kernels_it_built() -> None:
    assert offered_algorithms(["tifed", "lsgd", "sgd", "lsgd-q8"]) == list(MCU_ALGORITHMS)
    assert offered_algorithms(["tifed"]) == ["tifed", "tifed-single"]
    assert offered_algorithms(["lsgd", "sgd"]) == ["lsgd"]
    assert offered_algorithms([]) == []


def test_lsgd_jobs_fit_by_their_per_sample_plan() -> None:
    kw = {"algorithms": MCU_ALGORITHMS}
    one = arena_need(job_setup("lsgd", FLOAT_MODEL, {}, 1))
    assert job_fit("lsgd", FLOAT_MODEL, {"lr": 0.1}, arena_bytes=one, **kw) is None
    why = job_fit("lsgd", FLOAT_MODEL, {}, arena_bytes=one - 1, **kw)
    assert why == f"64-32-10 with one sample needs {one:,} arena bytes; the device has {one - 1:,}"
    q8 = {**FLOAT_MODEL, "format": {"weight_frac": [6, 6], "bias_frac": [6, 6]}}
    assert arena_need(job_setup("lsgd-q8", q8, {}, 1)) < one  # int8 weights
    odd = {**FLOAT_MODEL, "activations": ["gelu", "sigmoid"]}
    assert "no activation or loss" in str(job_fit("lsgd", odd, {}, arena_bytes=1 << 20, **kw))


def test_the_top_p_snapshot_is_planned_per_shared_layer() -> None:
    plain = arena_need(job_setup("lsgd", FLOAT_MODEL, {}, 5))
    one = arena_need(job_setup("lsgd", FLOAT_MODEL, {}, 5, shared_layers=1))
    both = arena_need(job_setup("lsgd", FLOAT_MODEL, {}, 5, shared_layers=2))

    def up(n: int) -> int:  # every buffer starts 8-byte aligned
        return (n + 7) & ~7

    # Theta of layer 0 (W then b), then the 256-counter histogram.
    assert one == up(up(up(plain) + 64 * 32 * 4) + 32 * 4) + 1024
    assert both == up(up(up(up(up(plain) + 64 * 32 * 4) + 32 * 4) + 32 * 10 * 4) + 10 * 4) + 1024


def test_largest_job_capacity_is_the_largest_buffer_that_fits() -> None:
    arena = arena_need(job_setup("lsgd", FLOAT_MODEL, {}, 40, shared_layers=1))
    cap = largest_job_capacity("lsgd", FLOAT_MODEL, {}, arena, 1000, shared_layers=1)
    assert cap >= 40
    assert arena_need(job_setup("lsgd", FLOAT_MODEL, {}, cap, shared_layers=1)) <= arena
    assert arena_need(job_setup("lsgd", FLOAT_MODEL, {}, cap + 1, shared_layers=1)) > arena
    assert largest_job_capacity("lsgd", FLOAT_MODEL, {}, 100, 1000) == 0
