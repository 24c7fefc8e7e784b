"""L-SGD vs SGD per training sample on Cortex-M3, M4F and M7 images under QEMU.

Run ``python -m bench.mcu_fpu`` (needs qemu-system-arm and arm-none-eabi-gcc). It writes
section ``mcu-fpu`` of docs/benchmarks.md: instructions per sample of float SGD (batch 1, the
paper's "Algorithm 1" with gradient buffers) and float L-SGD on the paper's 784-40-32-10, on
the soft-float Cortex-M3 image (QEMU ``mps2-an385``) and the hard-float Cortex-M4F
(``mps2-an386``) and Cortex-M7 (``mps2-an500``) images, next to the paper's 4.20x, which was
measured on an STM32F767 (a Cortex-M7).

Instructions come from the STATS/TRAIN kernel ticks under ``-icount shift=0``: one guest
instruction is 1 ns of virtual time and the CMSDK timer counts 25 MHz on all three machines, so
one tick is 40 instructions. They are instruction counts, not cycles: QEMU models neither
pipelines nor caches nor FPU latencies, so a ratio of instruction counts is what it can measure.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from bench.report import markdown_table, write_section
from eddl.data import load_dataset
from eddl.learn.model import MLPSpec, init_params
from eddl.mcu.driver import Device
from eddl.mcu.launch import build_firmware, qemu_machine, start_qemu
from eddl.mcu.protocol import Act, Algo, Loss, SetupSpec
from eddl.mcu.session import DeviceModel

INSTR_PER_TICK = 40
PAPER = (784, 40, 32, 10)
ACTS = (Act.TANH, Act.TANH, Act.SIGMOID)
PAPER_RATIO = 4.20
BOARDS = (
    ("mps2", "Cortex-M3, soft float"),
    ("an386", "Cortex-M4F, fpv4-sp-d16"),
    ("an500", "Cortex-M7, fpv5-sp-d16"),
)


def per_sample(dev: Device, algo: Algo, x: np.ndarray, y: np.ndarray) -> float:
    """Instructions per sample of one TRAIN over ``x`` (batch 1) from the same initial model."""
    mlp = MLPSpec(sizes=PAPER, activations=("tanh", "tanh", "sigmoid"), loss="bce")
    model = DeviceModel(dev, SetupSpec(algo, PAPER, len(x), 1, ACTS, Loss.BCE))
    model.load_params(init_params(mlp, 0))
    model.load_samples(x, y)
    samples, ticks = dev.train(len(x), batch=1, lr=0.01, timeout=600.0)
    return ticks * INSTR_PER_TICK / samples


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=25, help="training samples per kernel")
    args = parser.parse_args(argv)
    command = ["python", "-m", "bench.mcu_fpu", *(sys.argv[1:] if argv is None else argv)]
    build_firmware("qemu", "fpu", timeout=600)
    data = load_dataset("mnist-10k")
    x, y = data.x_train[: args.samples], data.y_train[: args.samples]
    rows = []
    for board, cpu in BOARDS:
        with start_qemu(board, lifetime=900.0) as q, Device.open(q.url, timeout=5.0) as dev:
            sgd = per_sample(dev, Algo.SGD, x, y)
            lsgd = per_sample(dev, Algo.LSGD, x, y)
        rows.append(
            [
                f"`{qemu_machine(board)}` ({cpu})",
                f"{sgd / 1e6:.3f} M",
                f"{lsgd / 1e6:.3f} M",
                f"**{sgd / lsgd:.2f}x**",
            ]
        )
    table = markdown_table(
        ["QEMU machine (image)", "SGD batch 1", "L-SGD", "SGD / L-SGD"],
        rows,
    )
    body = f"""
Instructions per training sample on 784-40-32-10 (tanh, tanh, sigmoid + BCE), {args.samples}
MNIST samples, the same initial model; `-O2`, images from `make -C firmware qemu fpu`. The
paper's L-SGD speed-up over SGD is **{PAPER_RATIO:.2f}x**, measured on an STM32F767
(Cortex-M7 at its clock, so in time: cycles, caches and FPU latencies included).

{table}

Counted by QEMU: kernel ticks of the CMSDK timer under `-icount shift=0` (one instruction per
ns, 25 MHz timer: 40 instructions per tick, on all three machines); the Cortex-M3 row is the
same measurement as section *MCU firmware: Cortex-M3 cost and memory*. These are instructions
retired, not cycles: QEMU models
no pipeline, cache or FPU latency, so the M7 row is an instruction ratio set beside the paper's
time ratio, not a reproduction of it. The M4F and M7 images execute the same Thumb-2 and
single-precision FPU instructions, hence equal counts. Hardware float turns each soft-float
library call into one or two instructions, so the forward pass, the same in both algorithms,
shrinks, and the passes L-SGD saves (SGD's separate gradient and update passes over every
weight) weigh more: the ratio rises from the M3's to the FPU boards', but stays well below
4.20x. What instruction counts cannot show (SGD's 136 KB of gradient buffers against the M7's
caches, FPU and memory stalls) is not measured here.
"""
    write_section("mcu-fpu", "MCU firmware: L-SGD vs SGD on Cortex-M3, M4F and M7", body, command)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
