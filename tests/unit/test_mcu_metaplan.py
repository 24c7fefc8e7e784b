"""meta_fit: which microcontrollers can run a meta job's inner loop."""

from __future__ import annotations

from eddl.mcu.metaplan import meta_fit, meta_plan

MODEL = {"sizes": [64, 40, 32, 5], "task": "characters"}


def test_a_character_job_fits_a_device_with_lsgd_and_room() -> None:
    assert meta_fit("tinymetafed", MODEL, {}, arena_bytes=64 * 1024, algorithms=["lsgd"]) is None
    plan = meta_plan("tinymetafed", MODEL, {"local_layers": 1, "lr": 0.1})
    assert plan.shared_layers == 2 and plan.hyper == {"lr": 0.1}
    assert plan.model["activations"] == ["tanh", "tanh", "sigmoid"]
    assert meta_plan("reptile", MODEL, {}).shared_layers == 3


def test_refusals_say_why() -> None:
    def fit(
        model: dict[str, object], arena: int = 65536, kernels: tuple[str, ...] = ("lsgd",)
    ) -> str:
        return str(meta_fit("tinymetafed", model, {}, arena_bytes=arena, algorithms=kernels))

    assert "not lsgd" in fit(MODEL, kernels=("tifed",))
    assert "character tasks" in fit({"sizes": [1, 40, 40, 1], "task": "sine"})
    assert "arena bytes" in fit(MODEL, arena=2048)


def test_an_lsgd_q8_job_needs_the_lsgd_q8_kernel() -> None:
    q8 = {"kernel": "lsgd-q8", "lr": 0.05}
    plan = meta_plan("tinymetafed", MODEL, q8)
    assert plan.options.kernel == "lsgd-q8" and plan.hyper == {"lr_shift": 4}
    fit = meta_fit("tinymetafed", MODEL, q8, arena_bytes=64 * 1024, algorithms=["lsgd"])
    assert fit is not None and "not lsgd-q8" in fit
    assert meta_fit("reptile", MODEL, q8, arena_bytes=64 * 1024, algorithms=["lsgd-q8"]) is None


def test_error_feedback_stays_on_python_workers() -> None:
    hyper = {"error_feedback": True}
    fit = meta_fit("tinymetafed", MODEL, hyper, arena_bytes=64 * 1024, algorithms=["lsgd"])
    assert fit is not None and "error_feedback" in fit
