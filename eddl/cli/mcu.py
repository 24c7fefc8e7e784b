"""``eddl mcu``: start a simulated or emulated device, show its HELLO, train on it.

eddl mcu sim [--transport tcp|pty] [--baud N]
                                          host simulator; prints its URL, runs until Ctrl-C
eddl mcu qemu [--board due|mps2|an386|an500]  the firmware under QEMU MPS2; prints its URL
eddl mcu info URL [--json]                the device's capabilities
eddl mcu train URL --algo ALGO --dataset NAME [--batch-size N] [--pretrain-samples N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict

from eddl.mcu.driver import Device, McuError
from eddl.mcu.launch import (
    BOARDS,
    SIM_BAUD_RANGE,
    FirmwareError,
    Launched,
    start_qemu,
    start_sim,
)
from eddl.mcu.training import ALGORITHMS, TrainOptions, train_on_device

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mcu = subparsers.add_parser("mcu", help="microcontroller devices (simulator, QEMU, serial)")
    sub = mcu.add_subparsers(dest="mcu_command", metavar="SUBCOMMAND", help="what to do")
    sub.required = True

    sim = sub.add_parser("sim", help="start the host simulator and print its URL")
    sim.add_argument(
        "--transport",
        choices=("tcp", "pty"),
        default="tcp",
        help="serve the device on a TCP socket (socket://...) or a pseudo-terminal (/dev/pts/N)",
    )
    sim.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    sim.add_argument("--lifetime", type=float, default=3600.0, help="seconds before it stops")
    sim.add_argument(
        "--baud",
        type=_baud,
        default=None,
        help="pace the link like a UART at this rate, 8N1 (baud/10 bytes/s each way); "
        "default: as fast as the transport",
    )
    sim.set_defaults(func=_cmd_sim)

    qemu = sub.add_parser(
        "qemu", help="boot the firmware in QEMU (mps2-an385, -an386 or -an500) and print its URL"
    )
    qemu.add_argument(
        "--board",
        choices=sorted(BOARDS),
        default="due",
        help="the board whose CPU, RAM and arena the image is built for (an386: Cortex-M4F, "
        "an500: Cortex-M7, both with hardware float; the rest Cortex-M3)",
    )
    qemu.add_argument("--lifetime", type=float, default=3600.0, help="seconds before it stops")
    qemu.set_defaults(func=_cmd_qemu)

    info = sub.add_parser("info", help="print a device's HELLO")
    info.add_argument("url", help="pyserial URL: /dev/ttyACM0, a pty, socket://127.0.0.1:PORT")
    info.add_argument("--json", action="store_true", help="print the HELLO as JSON")
    info.add_argument("--timeout", type=float, default=2.0, help="reply timeout (s)")
    info.add_argument(
        "--connect-timeout",
        type=float,
        default=5.0,
        help="how long to retry a refused connection (s)",
    )
    info.set_defaults(func=_cmd_info)

    train = sub.add_parser("train", help="train a dataset on a device and print accuracy")
    train.add_argument("url", help="pyserial URL: /dev/ttyACM0, a pty, socket://127.0.0.1:PORT")
    train.add_argument("--algo", choices=ALGORITHMS, required=True, help="training algorithm")
    train.add_argument("--dataset", default="digits", help="digits or mnist-10k")
    train.add_argument("--hidden", default="32", help="hidden widths, comma separated")
    train.add_argument("--buffer", type=int, default=50, help="samples per device buffer")
    train.add_argument("--batch-size", type=int, default=25, help="mini-batch size (TIFeD, SGD)")
    train.add_argument("--local-epochs", type=int, default=5, help="epochs over each buffer")
    train.add_argument("--passes", type=int, default=1, help="passes over the training set")
    train.add_argument("--lr", type=float, default=0.05, help="learning rate (float)")
    train.add_argument("--lr-inv", type=int, default=2048, help="TIFeD inverse learning rate")
    train.add_argument(
        "--layer",
        type=int,
        default=None,
        help="tifed-single: train only this layer (default: each in turn)",
    )
    train.add_argument("--lr-shift", type=int, default=6, help="lsgd-q8: learning rate 2^-shift")
    train.add_argument(
        "--pretrain-samples",
        type=int,
        default=300,
        help="lsgd-q8: samples the host trains the float model on before quantizing",
    )
    train.add_argument(
        "--train-samples", type=int, help="use the first N training samples (default: all)"
    )
    train.add_argument(
        "--test-samples", type=int, help="use the first N test samples (default: all)"
    )
    train.add_argument(
        "--seed", type=int, default=0, help="random seed (initial weights, TIFeD feedback)"
    )
    train.add_argument("--timeout", type=float, default=2.0, help="reply timeout (s)")
    train.add_argument(
        "--connect-timeout",
        type=float,
        default=5.0,
        help="how long to retry a refused connection (s)",
    )
    train.add_argument("--json", action="store_true", help="print the report as JSON")
    train.set_defaults(func=_cmd_train)


def _baud(text: str) -> int:
    lo, hi = SIM_BAUD_RANGE
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"must be in {lo}..{hi}, got {value}")
    return value


def _serve(launch: Launched, what: str) -> int:
    print(launch.url, flush=True)
    print(f"{what} running (pid {launch.proc.pid}); Ctrl-C stops it", file=sys.stderr)
    try:
        while launch.alive:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        launch.close()
    return 0


def _cmd_sim(args: argparse.Namespace) -> int:
    try:
        launch = start_sim(args.transport, lifetime=args.lifetime, port=args.port, baud=args.baud)
    except FirmwareError as exc:
        print(f"eddl mcu sim: {exc}", file=sys.stderr)
        return 1
    return _serve(launch, "simulator")


def _cmd_qemu(args: argparse.Namespace) -> int:
    try:
        launch = start_qemu(args.board, lifetime=args.lifetime)
    except FirmwareError as exc:
        print(f"eddl mcu qemu: {exc}", file=sys.stderr)
        return 1
    return _serve(launch, f"QEMU ({BOARDS[args.board]})")


def _cmd_info(args: argparse.Namespace) -> int:
    try:
        with Device.open(
            args.url, timeout=args.timeout, connect_timeout=args.connect_timeout
        ) as dev:
            info = dev.info
    except McuError as exc:
        print(f"eddl mcu info: {exc}", file=sys.stderr)
        return 1
    assert info is not None
    if args.json:
        print(json.dumps(asdict(info)))
        return 0
    for key, value in asdict(info).items():
        shown = ", ".join(value) if isinstance(value, tuple) else value
        print(f"{key:17} {shown}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from eddl.data import load_dataset

    try:
        hidden = tuple(int(h) for h in args.hidden.split(","))
        opts = TrainOptions(
            algo=args.algo,
            hidden=hidden,
            buffer=args.buffer,
            batch=args.batch_size,
            local_epochs=args.local_epochs,
            passes=args.passes,
            lr=args.lr,
            lr_inv=args.lr_inv,
            seed=args.seed,
            layer=args.layer,
            lr_shift=args.lr_shift,
            pretrain=args.pretrain_samples,
        )
        data = load_dataset(args.dataset)
    except ValueError as exc:
        print(f"eddl mcu train: {exc}", file=sys.stderr)
        return 2
    x_tr, y_tr = data.x_train[: args.train_samples], data.y_train[: args.train_samples]
    x_te, y_te = data.x_test[: args.test_samples], data.y_test[: args.test_samples]

    def progress(done: int, total: int) -> None:
        if not args.json:
            print(f"\rtrained {done}/{total} samples", end="", file=sys.stderr, flush=True)

    try:
        with Device.open(
            args.url, timeout=args.timeout, connect_timeout=args.connect_timeout
        ) as dev:
            report = train_on_device(dev, x_tr, y_tr, x_te, y_te, opts, progress)
    except (McuError, ValueError) as exc:
        print(f"\neddl mcu train: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.as_dict()))
        return 0
    print(file=sys.stderr)
    sizes = "-".join(str(s) for s in report.sizes)
    if report.accuracy_before is not None:
        print(f"quantized model before fine-tuning: accuracy {report.accuracy_before:.2%}")
    print(
        f"{report.algo} {sizes} on {args.dataset}: accuracy {report.accuracy:.2%} "
        f"({len(y_te)} test samples)"
    )
    print(
        f"trained {report.samples} samples, {report.ticks_per_sample:.0f} ticks/sample at "
        f"{report.tick_hz} Hz, arena {report.arena_used}/{report.arena_bytes} bytes, "
        f"{report.seconds:.1f} s"
    )
    return 0
