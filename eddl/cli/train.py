"""``eddl train``: a federated run in one process (no network), on the shipped datasets."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from eddl.cli.metatrain import add_arguments, run_meta_cli
from eddl.data import DATASETS, DatasetError, PartitionError, parse_partition
from eddl.learn.aggregation import SERVER_OPT_NAMES, AggregationError
from eddl.learn.algorithms import AlgorithmError
from eddl.learn.metaoptions import META_ALGORITHMS
from eddl.learn.params import ParamsError
from eddl.simulate import ALGO_DEFAULTS, FederatedConfig, RoundResult, RunResult, run_federated

__all__ = ["register"]


def _partition(text: str) -> str:
    try:
        parse_partition(text)
    except PartitionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def register(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="run a federated training job in one process (no network)",
        description="Federated training of N simulated clients for R rounds, in one process.",
    )
    p.add_argument(
        "--algo",
        choices=sorted([*ALGO_DEFAULTS, *META_ALGORITHMS]),
        default="lsgd",
        help="training algorithm",
    )
    p.add_argument("--dataset", choices=DATASETS, default="digits", help="dataset to train on")
    p.add_argument("--data-path", help="folder with the 60k MNIST IDX files (--dataset mnist)")
    p.add_argument("--clients", type=int, default=4, help="number of simulated clients")
    p.add_argument("--rounds", type=int, default=5, help="federated rounds")
    p.add_argument(
        "--partition",
        type=_partition,
        default="iid",
        help="how the training set is split among clients: iid | dirichlet:ALPHA",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed (partition, initial weights, sampling)"
    )
    p.add_argument("--local-epochs", type=int, help="local epochs per round (default: per algo)")
    p.add_argument(
        "--buffer", type=int, help="samples a client holds per round (default: per algo)"
    )
    p.add_argument(
        "--new-per-round",
        type=int,
        help="new samples entering the buffer each round (default: per algo; tifed 10)",
    )
    p.add_argument("--lr", type=float, help="learning rate (float algorithms, default 0.01)")
    p.add_argument("--batch-size", type=int, help="mini-batch size (sgd; tifed default 25)")
    p.add_argument("--lr-inv", type=int, help="TIFeD inverse learning rate (default 2048)")
    p.add_argument("--lr-shift", type=int, help="lsgd-q8 learning rate 2^-N (default 7)")
    p.add_argument(
        "--pretrain-rounds",
        type=int,
        default=2,
        help="lsgd-q8: float L-SGD rounds before quantizing and fine-tuning",
    )
    g = p.add_argument_group(
        "server optimizer",
        "applied to each round's mean delta (float models; see docs/aggregation.md)",
    )
    g.add_argument(
        "--server-opt", choices=SERVER_OPT_NAMES, help="sgd (rate, momentum), adam or yogi"
    )
    g.add_argument("--server-lr", type=float, help="server learning rate (sgd 1.0, adam 0.01)")
    g.add_argument("--server-momentum", type=float, help="sgd: momentum β (FedAvgM), [0, 1)")
    g.add_argument("--server-beta1", type=float, help="adam/yogi: β1 (default 0.9)")
    g.add_argument("--server-beta2", type=float, help="adam/yogi: β2 (default 0.99)")
    g.add_argument("--server-tau", type=float, help="adam/yogi: τ (default 1e-3)")
    p.add_argument(
        "--target-accuracy",
        type=float,
        help="stop after the first round whose test accuracy reaches this, in (0, 1]",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    add_arguments(p)
    p.set_defaults(func=run)


def _hyper(args: argparse.Namespace) -> dict[str, Any]:
    hyper: dict[str, Any] = {}
    if args.lr is not None:
        hyper["lr"] = args.lr
    if args.batch_size is not None:
        hyper["batch_size"] = args.batch_size
    if args.lr_inv is not None:
        hyper["lr_inv"] = args.lr_inv
    if args.lr_shift is not None:
        hyper["lr_shift"] = args.lr_shift
    return hyper


_SERVER_ARGS = (
    "server_opt",
    "server_lr",
    "server_momentum",
    "server_beta1",
    "server_beta2",
    "server_tau",
)


def _sync_params(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--server-*`` options given, as a job's ``[job.sync_params]`` would hold them."""
    return {k: getattr(args, k) for k in _SERVER_ARGS if getattr(args, k) is not None}


def _aggregation(result: RunResult) -> str:
    desc = result.aggregation
    extra = ", ".join(
        f"{k.removeprefix('server_')} {v}" for k, v in desc.items() if k.startswith("server_")
    )
    return f"{desc.get('name', '?')} ({extra})" if extra else str(desc.get("name", "?"))


def _buffer(result: RunResult) -> str:
    if result.buffer is None:
        return "whole shard"
    if result.new_per_round is None or result.new_per_round == result.buffer:
        return f"{result.buffer} (fresh each round)"
    return f"{result.buffer} ({result.new_per_round} new per round)"


def _summary(result: RunResult) -> Table:
    table = Table(title=f"eddl train: {result.algo} on {result.dataset}")
    table.add_column("", style="bold")
    table.add_column("value", justify="right")
    rows = [
        ("clients × rounds", f"{result.clients} × {result.rounds}"),
        ("partition", result.partition),
        ("local epochs / buffer", f"{result.local_epochs} / {_buffer(result)}"),
        ("aggregation", _aggregation(result)),
        ("test accuracy (last)", f"{result.accuracy:.2%}"),
        ("test accuracy (best)", f"{result.best_accuracy:.2%}"),
        ("samples trained", f"{result.samples:,}"),
        *(
            [("samples to target", f"{result.samples_to_target:,}")]
            if result.samples_to_target is not None
            else []
        ),
        ("training state (bytes)", f"{result.train_state_bytes:,}"),
        ("model (bytes)", f"{result.model_bytes:,}"),
        ("time", f"{result.seconds:.2f} s"),
    ]
    if result.pretrain is not None:
        rows.insert(
            4,
            (
                "float pre-train → int8",
                f"{result.pretrain['float_accuracy']:.2%} → "
                f"{result.pretrain['quantized_accuracy']:.2%}",
            ),
        )
    for k, v in rows:
        table.add_row(k, v)
    return table


def run(args: argparse.Namespace) -> int:
    if args.algo in META_ALGORITHMS:
        return run_meta_cli(args)
    err = Console(stderr=True)
    try:
        cfg = FederatedConfig(
            algo=args.algo,
            dataset=args.dataset,
            clients=args.clients,
            rounds=args.rounds,
            partition=args.partition,
            seed=args.seed,
            local_epochs=args.local_epochs,
            buffer=args.buffer,
            new_per_round=args.new_per_round,
            hyper=_hyper(args),
            dataset_path=args.data_path,
            pretrain_rounds=args.pretrain_rounds,
            sync_params=_sync_params(args),
            target_accuracy=args.target_accuracy,
        )
        if args.json:
            result = run_federated(cfg)
        else:
            columns = (
                TextColumn("[bold]round"),
                MofNCompleteColumn(),
                BarColumn(),
                TextColumn("accuracy {task.fields[acc]}"),
                TimeElapsedColumn(),
            )
            with Progress(*columns, console=err) as progress:
                task = progress.add_task("train", total=cfg.rounds, acc="  -   ")

                def on_round(r: RoundResult) -> None:
                    progress.update(task, advance=1, acc=f"{r.accuracy:6.2%}")

                result = run_federated(cfg, on_round)
    except (
        ValueError,
        DatasetError,
        PartitionError,
        AlgorithmError,
        AggregationError,
        ParamsError,
    ) as exc:
        err.print(f"[red]eddl train: {exc}[/red]")
        return 2
    if args.json:
        out = result.to_dict()
        out["history"] = [{"round": r.round, "accuracy": r.accuracy} for r in result.history]
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
    else:
        Console().print(_summary(result))
    return 0
