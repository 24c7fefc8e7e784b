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
    assert "not on 'speech'" in fit({"sizes": [1, 40, 40, 1], "task": "speech"})
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


def test_sine_and_presence_run_on_the_float_kernel_with_float_samples() -> None:
    sine = {"sizes": [1, 40, 40, 1], "task": "sine"}
    plan = meta_plan("tinymetafed", sine, {"local_layers": 1, "lr": 0.02})
    assert plan.model["activations"] == ["tanh", "tanh", "linear"] and plan.model["loss"] == "mse"
    assert plan.model["inputs"] == plan.model["targets"] == "float" and plan.float_samples
    assert meta_fit("reptile", sine, {}, arena_bytes=64 * 1024, algorithms=["lsgd"]) is None
    presence = {"sizes": [24, 32, 16, 2], "task": "presence"}
    plan = meta_plan("tinymetafed", presence, {})
    assert plan.model["activations"] == ["tanh", "tanh", "sigmoid"] and plan.model["loss"] == "bce"
    assert plan.model["inputs"] == "float" and "targets" not in plan.model
    assert meta_fit("tinymetafed", presence, {}, arena_bytes=64 * 1024, algorithms=["lsgd"]) is None


def test_float_samples_count_in_the_arena() -> None:
    """A float sample takes 4 bytes per input: a device that holds the pixel model with one
    sample may not hold the float one."""
    from eddl.mcu.plan import arena_need, job_setup

    def need(task: str, capacity: int) -> int:
        p = meta_plan("reptile", {"sizes": [64, 40, 5], "task": task}, {})
        return arena_need(job_setup("lsgd", p.model, p.hyper, capacity, shared_layers=2))

    assert need("presence", 100) - need("characters", 100) == 100 * 64 * 3
    arena = need("presence", 1) - 1
    assert need("characters", 1) <= arena

    def fit(task: str) -> str | None:
        model = {"sizes": [64, 40, 5], "task": task}
        return meta_fit("reptile", model, {}, arena_bytes=arena, algorithms=["lsgd"])

    assert fit("characters") is None
    assert "arena bytes" in str(fit("presence"))


def test_lsgd_q8_refuses_float_tasks_with_a_clear_error() -> None:
    for task, sizes in (("sine", [1, 40, 40, 1]), ("presence", [24, 32, 16, 2])):
        model = {"sizes": sizes, "task": task}
        why = meta_fit(
            "tinymetafed", model, {"kernel": "lsgd-q8"}, arena_bytes=1 << 20, algorithms=["lsgd-q8"]
        )
        assert why is not None and "lsgd-q8 kernel reads uint8 pixels" in why and task in why


def test_float_tasks_need_a_firmware_that_reads_float_samples() -> None:
    """``float_samples``: the device's HELLO says SETUP takes float32 samples (firmware 0.2.0)."""

    def fit(model: dict[str, object]) -> str | None:
        return meta_fit(
            "reptile", model, {}, arena_bytes=1 << 20, algorithms=["lsgd"], float_samples=False
        )

    for task, sizes in (("sine", [1, 40, 40, 1]), ("presence", [24, 32, 16, 2])):
        why = fit({"sizes": sizes, "task": task})
        assert why is not None and why.startswith(f"reptile on the {task} task: the job's")
        assert "HELLO lacks the float-sample flag" in why
    assert fit(MODEL) is None
