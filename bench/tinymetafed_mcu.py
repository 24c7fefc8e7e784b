"""A TinyMetaFed device round on a microcontroller: instructions and an energy estimate.

Run: ``python -m bench.tinymetafed_mcu`` (needs qemu-system-arm and arm-none-eabi-gcc;
``--devices``, ``--no-write``). Writes section ``tinymetafed-mcu`` of docs/benchmarks.md.

Each row of the first table is the device round of the job in
``docs/jobs/tinymetafed-digits.toml`` (5-way digits, 10 samples per class: 50 samples) that
a gateway hands a microcontroller (:func:`eddl.worker.mcu_meta.run_mcu_meta_task`): the head
rebuilt in numpy on the gateway, then the online inner loop (float ``lsgd`` or integer
``lsgd-q8``, batch 1) and the top-P selection on the device, its values float32 or
(``values = "int8"``) quantised on the device; each row also gives the bytes the gateway
uploads for the round. The second table does the same for sine
(``docs/jobs/tinymetafed-sine.toml``) and presence, whose samples the device reads as float32.
The instructions are the inner loop's, from the firmware's kernel ticks (STATS) under QEMU
``-icount shift=0``: one instruction per ns of virtual time, a 25 MHz timer, so 40
instructions per tick (as ``bench.mcu_fpu``). The on-device top-P selection is not inside
the timed kernel and is not counted.

Energy: instructions × the run-mode supply current per MHz of a named Cortex-M4F part × its
supply voltage, taking one cycle per instruction — a lower bound, as a Cortex-M4 takes one
cycle or more per instruction. The figure is the STM32L496xx datasheet's feature list,
"91 µA/MHz run mode (LDO mode)", at VDD = 3.0 V: 91 µA · 3.0 V / 1 MHz = 273 pJ per cycle.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.report import markdown_table, write_section
from eddl.mcu.build import build_firmware
from eddl.mcu.driver import Device
from eddl.mcu.launch import qemu_machine, start_qemu
from eddl.metajob import MetaJobConfig, meta_job
from eddl.net.chunks import params_nbytes
from eddl.net.sparse import wire_bytes
from eddl.worker.executor import TaskResult, TaskSpec
from eddl.worker.mcu_meta import run_mcu_meta_task
from eddl.worker.mcu_runner import McuTaskRunner
from eddl.worker.transfer import sparse_records

__all__ = ["main"]

INSTR_PER_TICK = 40
PART = "STM32L496xx (Cortex-M4F)"
UA_PER_MHZ = 91.0
VDD = 3.0
PJ_PER_CYCLE = UA_PER_MHZ * VDD  # µA/MHz · V = pJ per cycle
JOBS = Path(__file__).resolve().parent.parent / "docs" / "jobs"
JOB = JOBS / "tinymetafed-digits.toml"
SINE_JOB = JOBS / "tinymetafed-sine.toml"
BOARDS = (("an386", "Cortex-M4F"), ("mps2", "Cortex-M3, soft float"))
VARIANTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("tinymetafed", "tinymetafed, 1 inner epoch", {}),
    ("tinymetafed", "tinymetafed, 5 inner epochs", {"inner_epochs": 5}),
    ("tinymetafed", "tinymetafed lsgd-q8, 1 inner epoch", {"kernel": "lsgd-q8"}),
    ("tinymetafed", "tinymetafed, int8 values made on the device", {"values": "int8"}),
    (
        "tinymetafed",
        "tinymetafed lsgd-q8, int8 values made on the device",
        {"kernel": "lsgd-q8", "values": "int8"},
    ),
    ("reptile", "reptile (dense), 1 inner epoch", {}),
)
# Sine and presence reach the device as float32 samples (the SETUP's sample format). One inner
# epoch, as the rows say (the shipped sine job runs 20): the cost of one pass over the samples.
FLOAT_VARIANTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("tinymetafed", "tinymetafed, 1 inner epoch", {"inner_epochs": 1}),
    ("reptile", "reptile (dense), 1 inner epoch", {"inner_epochs": 1}),
)


def _float_jobs(digits: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The sine job as shipped (its inner epochs set by the variant), and the digits job's
    schedule on presence (10 samples per device, the task's default network)."""
    sine = tomllib.loads(SINE_JOB.read_text())["job"]
    presence = {**digits, "dataset": "presence", "model": {"devices": 8, "held_out": 10}}
    return [("sine", sine), ("presence", presence)]


def _task(job: dict[str, Any], algorithm: str, hyper: dict[str, Any], device: int) -> TaskSpec:
    base = dict(job["hyper"])
    if algorithm == "reptile":
        base = {k: v for k, v in base.items() if k not in ("top_p", "local_layers", "recon_epochs")}
    return TaskSpec(
        job_id="bench",
        task_id=f"d{device}",
        version=0,
        dataset=job["dataset"],
        indexes=(device,),
        algorithm=algorithm,
        model_json=json.dumps(job["model"]),
        hyper_json=json.dumps({**base, **hyper}),
        seed=device + 1,
    )


def _upload_bytes(res: TaskResult) -> int:
    """What the gateway uploads for the round: the sparse records' serialised size, or the
    dense tensors' bytes (the update header's ``total_bytes``, as the worker daemon sends)."""
    records = sparse_records(res)
    return wire_bytes(records) if records is not None else params_nbytes(res.params)


def _measure(
    board: str,
    job: dict[str, Any],
    devices: int,
    variants: Sequence[tuple[str, str, dict[str, Any]]] = VARIANTS,
) -> list[tuple[str, float, int, float]]:
    """(variant, mean instructions per device round, samples trained per round, mean upload
    bytes per round) on ``board``."""
    out: list[tuple[str, float, int, float]] = []
    with start_qemu(board, lifetime=900.0) as q, Device.open(q.url, timeout=5.0) as dev:
        runner = McuTaskRunner(dev, max_buffer=16, train_timeout=300.0)
        for algorithm, label, hyper in variants:
            ticks, sent, samples = [], [], 0
            for d in range(devices):
                task = _task(job, algorithm, hyper, d)
                spec = meta_job(
                    MetaJobConfig.of_wire(algorithm, task.dataset, task.model_json, task.hyper_json)
                )
                res = run_mcu_meta_task(runner, task, spec.initial_shared())
                ticks.append(res.kernel_ticks)
                sent.append(_upload_bytes(res))
                samples = res.steps  # samples trained: the device's samples × epochs
            instr = INSTR_PER_TICK * sum(ticks) / len(ticks)
            out.append((label, instr, samples, sum(sent) / len(sent)))
    return out


def _arch(job: dict[str, Any]) -> str:
    probe = _task(job, "tinymetafed", {}, 0)
    config = MetaJobConfig.of_wire("tinymetafed", probe.dataset, probe.model_json, "{}")
    return "-".join(map(str, meta_job(config).model.sizes))


def _cells(board: str, instr: float, samples: int, sent: float) -> list[Any]:
    energy = f"{instr * PJ_PER_CYCLE / 1e9:.2f} mJ" if board == "an386" else "-"
    return [samples, f"{instr / 1e6:.3f} M", f"{instr / samples:,.0f}", energy, f"{sent:,.0f}"]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=3, help="device tasks measured per row")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if not 1 <= args.devices <= 8:
        p.error("--devices must be in 1..8 (the job has 8 training devices)")
    job = tomllib.loads(JOB.read_text())["job"]
    probe = _task(job, "tinymetafed", {}, 0)
    sizes = meta_job(
        MetaJobConfig.of_wire("tinymetafed", probe.dataset, probe.model_json, probe.hyper_json)
    ).model.sizes
    build_firmware("qemu", "fpu", timeout=600)
    rows, float_rows = [], []
    for board, cpu in BOARDS:
        machine = f"`{qemu_machine(board)}` ({cpu})"
        for label, instr, samples, sent in _measure(board, job, args.devices):
            rows.append([machine, label, *_cells(board, instr, samples, sent)])
        for name, float_job in _float_jobs(job):
            arch = _arch(float_job)
            for label, instr, samples, sent in _measure(
                board, float_job, args.devices, FLOAT_VARIANTS
            ):
                cells = _cells(board, instr, samples, sent)
                float_rows.append([machine, f"{name} {arch}", label, *cells])
    columns = [
        "samples trained",
        "instructions / round",
        "per sample trained",
        f"energy / round ({PART})",
        "upload bytes / round",
    ]
    table = markdown_table(["QEMU machine", "device round", *columns], rows)
    float_table = markdown_table(["QEMU machine", "task", "device round", *columns], float_rows)
    arch = "-".join(map(str, sizes))
    body = f"""
The device round a gateway hands a microcontroller for `docs/jobs/tinymetafed-digits.toml`
(5-way digits, {arch}, 50 samples): the online inner loop (float `lsgd`, batch 1; or
`lsgd-q8` on int8 weights) on the device, mean over {args.devices} device tasks, from the
initial meta-model. TinyMetaFed's head is rebuilt on the gateway first, and the top-P
selection runs on the device after the loop; neither is inside the kernel ticks counted here.
Upload bytes: the serialised sparse records the gateway sends (`values = "int8"`: the
device's own int8 records and scales, forwarded as they are), or Reptile's dense float32 `φ`.

{table}

Sine (`docs/jobs/tinymetafed-sine.toml`: float32 inputs and regression targets, MSE, 10
samples per device) and presence (float32 sensor features, class labels, 10 samples per
device) on the same devices, their samples sent as float32 (the SETUP's sample format,
[firmware.md](firmware.md#sample-formats)); `lsgd-q8` takes character tasks only:

{float_table}

Instructions: firmware kernel ticks (STATS) under QEMU `-icount shift=0`, 40 instructions per
tick (see *MCU firmware: L-SGD vs SGD*). Energy: instructions × {UA_PER_MHZ:g} µA/MHz ×
{VDD:g} V = {PJ_PER_CYCLE:g} pJ per cycle, the run-mode current of the STM32L496xx datasheet's
feature list ("91 µA/MHz run mode (LDO mode)"; VDD = 3.0 V chosen, the LDO's current barely
depends on VDD), at one cycle per instruction: a lower bound, since Cortex-M4 loads, FPU
multiply-accumulates and branches take more than one cycle, and QEMU counts instructions, not
cycles. The radio, the serial link and the sensors are not included.
"""
    if not args.no_write:
        write_section(
            "tinymetafed-mcu", "TinyMetaFed on a microcontroller: compute and energy", body
        )
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
