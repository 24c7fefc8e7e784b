"""``eddl train --algo tinymetafed|reptile``: federated meta-learning in one process.

The options below are added to ``eddl train``'s parser; ``--clients`` is the number of
training devices, ``--rounds``, ``--seed``, ``--dataset`` (character images), ``--lr`` (inner
loop) and ``--json`` keep their meaning. Option values are bounded by
:class:`eddl.learn.metaoptions.MetaOptions`, as in job files.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from eddl.data import DatasetError
from eddl.learn.metaoptions import MetaOptionsError
from eddl.metasim import META_TASKS, MetaConfig, MetaResult, MetaRound, run_meta

__all__ = ["add_arguments", "run_meta_cli"]

_HYPER = {
    "meta_lr": float,
    "meta_lr_final": float,
    "devices_per_round": int,
    "inner_epochs": int,
    "eval_epochs": int,
    "top_p": float,
    "local_layers": int,
    "recon_epochs": int,
}


def _shots(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected k values like 1,5,10, got {text!r}") from None
    if not ks or any(not 1 <= k <= 1000 for k in ks):
        raise argparse.ArgumentTypeError(f"k values must lie in 1..1000, got {text!r}")
    return ks


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("meta-learning (--algo tinymetafed | reptile)")
    g.add_argument("--task", choices=META_TASKS, default="sine", help="device tasks")
    g.add_argument("--held-out", type=int, default=10, help="held-out (few-shot) devices")
    g.add_argument("--samples", type=int, default=10, help="samples per device (per class)")
    g.add_argument("--n-way", type=int, default=5, help="classes per character task")
    g.add_argument("--shots", type=_shots, help="k values of the few-shot evaluation: 1,5,10")
    for key, kind in _HYPER.items():
        g.add_argument(f"--{key.replace('_', '-')}", type=kind, help=f"hyper.{key}")
    g.add_argument("--values", choices=("float32", "int8"), help="tinymetafed upload values")
    g.add_argument(
        "--error-feedback",
        action="store_true",
        help="tinymetafed: devices keep the entries top-P did not send for their next round",
    )


def _config(args: argparse.Namespace) -> MetaConfig:
    hyper: dict[str, Any] = {k: getattr(args, k) for k in _HYPER if getattr(args, k) is not None}
    if args.lr is not None:
        hyper["lr"] = args.lr
    if args.values is not None:
        hyper["values"] = args.values
    if args.error_feedback:
        hyper["error_feedback"] = True
    return MetaConfig(
        algo=args.algo,
        task=args.task,
        dataset=args.dataset if args.dataset != "mnist" else "mnist-10k",
        train_devices=args.clients,
        held_out_devices=args.held_out,
        rounds=args.rounds,
        seed=args.seed,
        hyper=hyper,
        n_way=args.n_way,
        samples=args.samples,
        shots=args.shots or (),
    )


def _summary(result: MetaResult) -> Table:
    table = Table(title=f"eddl train: {result.algo} on {result.task}")
    table.add_column("", style="bold")
    table.add_column("value", justify="right")
    fmt = "{:.2%}" if result.metric == "accuracy" else "{:.4f}"
    for k, few in result.few_shot.items():
        table.add_row(f"few-shot {result.metric}, k={k}", fmt.format(few.mean))
    table.add_row("upload / device / round (bytes)", f"{result.upload_bytes:,.0f}")
    table.add_row("download / device / round (bytes)", f"{result.download_bytes:,.0f}")
    table.add_row("dense model (bytes)", f"{result.dense_bytes:,}")
    table.add_row("rounds", str(len(result.history)))
    table.add_row("time", f"{result.seconds:.2f} s")
    return table


def run_meta_cli(args: argparse.Namespace) -> int:
    err = Console(stderr=True)
    try:
        cfg = _config(args)

        def on_round(r: MetaRound) -> None:
            if not args.json:
                err.print(f"round {r.round}: ε={r.eps:.3f} upload {r.upload_bytes:,.0f} B")

        result = run_meta(cfg, on_round)
    except (ValueError, DatasetError, MetaOptionsError) as exc:
        err.print(f"[red]eddl train: {exc}[/red]")
        return 2
    if args.json:
        json.dump(result.to_dict(), sys.stdout)
        sys.stdout.write("\n")
    else:
        Console().print(_summary(result))
    return 0
