"""``eddl profile``: print this device's profile; probe a peer; serve the probe.

    eddl profile                          # table: static + dynamic profile
    eddl profile --json                   # the same as JSON
    eddl profile --benchmark lsgd --model 784-40-32-10   # adds the compute micro-benchmark
    eddl profile --probe HOST:PORT        # adds RTT and bandwidth against a probe server
    eddl profile --serve-probe [--bind 0.0.0.0:50060]    # runs a probe server until Ctrl-C

Settings come from ``[profiler]`` of ``--config FILE`` and ``EDDL_PROFILER_*``. Exit codes: 0 ok,
1 the probe failed (its reason is printed), 2 bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from rich.console import Console

from eddl.config import ConfigError, load_config
from eddl.profiler.config import ProfilerConfig
from eddl.profiler.node import NodeProfiler
from eddl.profiler.probe import serve_probe
from eddl.profiler.probe_client import ProbeError, probe_peer
from eddl.profiler.render import profile_table, profile_to_dict
from eddl.profiler.throughput import TrainerLike
from eddl.security.admin import admin_identity
from eddl.security.tls import channel_credentials

__all__ = ["BENCHMARK_ALGORITHMS", "register", "run_profile"]

BENCHMARK_ALGORITHMS = ("sgd", "lsgd", "tifed")
_MIN_CPU_INTERVAL_S = 0.5


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "profile",
        help="print this device's profile",
        description="Print this device's runtime profile (static, dynamic, compute, network).",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--config", default=None, help="TOML file with a [profiler] table")
    p.add_argument("--node-id", default=None, help="node id to report (default: hostname)")
    p.add_argument("--role", default="worker", help="node role to report (default: worker)")
    p.add_argument("--probe", metavar="HOST:PORT", help="measure RTT/bandwidth to a probe server")
    p.add_argument("--probe-bytes", type=int, default=None, help="bytes per timed transfer")
    p.add_argument("--probe-timeout", type=float, default=None, help="seconds for the probe")
    p.add_argument("--benchmark", choices=BENCHMARK_ALGORITHMS, help="run the micro-benchmark")
    p.add_argument("--model", default="784-40-32-10", help="layer sizes for --benchmark")
    p.add_argument("--serve-probe", action="store_true", help="serve the probe until Ctrl-C")
    p.add_argument("--bind", default="0.0.0.0:0", help="address for --serve-probe (HOST:PORT)")
    p.set_defaults(func=run_profile)


def _parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split("-"))
    except ValueError as exc:
        raise ConfigError(f"--model must look like 784-40-32-10, got {text!r}") from exc
    if len(sizes) < 2 or min(sizes) < 1:
        raise ConfigError(f"--model needs at least two positive widths, got {text!r}")
    return sizes


def _benchmark_job(
    algorithm: str, sizes: tuple[int, ...]
) -> tuple[Callable[[], TrainerLike], dict[str, np.ndarray], type[np.generic]]:
    """The trainer factory, initial params and sample dtype of a job for ``algorithm``."""
    if algorithm == "tifed":
        from eddl.learn import tifed

        cfg = tifed.TifedConfig(sizes=sizes)
        return (lambda: tifed.TifedTrainer(cfg)), tifed.init_params(cfg), np.uint8
    from eddl.learn.lsgd import LSGDTrainer
    from eddl.learn.model import MLPSpec, init_params
    from eddl.learn.sgd import SGDTrainer

    # The L-SGD paper's network shape: tanh hidden layers, sigmoid output, BCE loss.
    spec = MLPSpec(sizes, ("tanh",) * (len(sizes) - 2) + ("sigmoid",), "bce")
    factory: Callable[[], TrainerLike]
    if algorithm == "lsgd":
        factory = lambda: LSGDTrainer(spec, 0.01)  # noqa: E731
    else:
        factory = lambda: SGDTrainer(spec, 0.01, 32)  # noqa: E731
    return factory, init_params(spec, 0), np.float32


def run_profile(args: argparse.Namespace) -> int:
    overrides = {"probe_payload_bytes": args.probe_bytes, "probe_timeout_s": args.probe_timeout}
    try:
        config = load_config(ProfilerConfig, "profiler", args.config, overrides)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if args.serve_probe:
        asyncio.run(serve_probe(args.bind))
        return 0
    node_id = args.node_id or socket.gethostname()
    started = time.monotonic()
    profiler = NodeProfiler(node_id, args.role, config)
    if args.benchmark:
        sizes = _parse_sizes(args.model)
        try:
            factory, params, dtype = _benchmark_job(args.benchmark, sizes)
        except ValueError as exc:
            raise ConfigError(f"--model {args.model}: {exc}") from exc
        profiler.benchmark(args.benchmark, args.model, factory, params, sizes[0], sizes[-1], dtype)
    if args.probe:
        try:
            # With the eddl command's admin certificate when enrolled (a cluster daemon).
            admin = admin_identity()
            creds = channel_credentials(admin) if admin is not None else None
            result = asyncio.run(probe_peer(args.probe, config.probe_config(), creds))
        except (ProbeError, ValueError) as exc:
            print(f"eddl: {exc}", file=sys.stderr)
            return 1
        profiler.links.record_probe(result)
    # CPU percentages are measured between two reads: give the first one a meaningful interval.
    time.sleep(max(0.0, _MIN_CPU_INTERVAL_S - (time.monotonic() - started)))
    profiler.sampler.sample_now()
    profile = profiler.snapshot()
    if args.json:
        print(json.dumps(profile_to_dict(profile), indent=2))
    else:
        Console().print(profile_table(profile))
    return 0
