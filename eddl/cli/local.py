"""``eddl local``: a whole cluster on this machine — a leader and N workers as real processes.

    eddl local --workers 4 --throttle 1,1,2,4

starts ``eddl-leader`` on a loopback port chosen by the OS, N ``eddl-worker`` processes
(``--throttle`` makes worker i behave F_i times slower, to show heterogeneity), submits the
default job (digits, shipped with EDDL; or ``--job FILE``), shows live progress (version,
accuracy, aggregation policy, workers), prints the result and shuts every process down with
SIGTERM (SIGKILL after a grace period). ``--json`` prints only the final result as JSON.

    eddl local --workers 2 --mcu 2 [--mcu-kind host|qemu]

adds a gateway worker bridging N emulated microcontrollers (the firmware's host simulator, or
QEMU boards with 64 KB of RAM) and trains the MCU job instead: TIFeD on digits, a network that
fits a 64 KB arena, trained by the Python workers with the numpy reference and by the MCUs
with the firmware, aggregated together. The emulated devices are built on first use from the
firmware sources shipped in the package (``make`` and a C compiler; QEMU also needs
``qemu-system-arm`` and ``gcc-arm-none-eabi``), see :mod:`eddl.mcu.build`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from eddl.cli.jobs import read_job_file, submit_job, watch_job
from eddl.mcu.launch import FirmwareError, Launched, start_qemu, start_sim
from eddl.net import open_channel
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc

__all__ = [
    "DEFAULT_JOB",
    "MCU_JOB",
    "LocalCluster",
    "LocalClusterError",
    "parse_throttles",
    "register",
]

DEFAULT_JOB: dict[str, Any] = {
    "dataset": "digits",
    "algorithm": "sgd",
    "model": {"sizes": [64, 32, 10], "activations": ["tanh", "sigmoid"], "loss": "bce"},
    "hyper": {"lr": 0.2, "batch_size": 8},
    "target_accuracy": 0.97,
    "max_epochs": 30.0,
    "aggregation": "auto",
    "task_seconds": 0.25,
    "round_deadline": 5.0,
}
# The job of a cluster with MCUs: integer TIFeD, 64-32-10 (8x8 digits), which with its
# mini-batch and a 250-sample buffer needs about 35 KB of arena: it fits a board with 64 KB of
# RAM. A 784-input MNIST network would leave room for only 3 hidden units there.
MCU_JOB: dict[str, Any] = {
    "dataset": "digits",
    "algorithm": "tifed",
    "model": {"sizes": [64, 32, 10]},
    "hyper": {"lr_inv": 2048, "batch_size": 25},
    "target_accuracy": 0.9,
    "max_epochs": 30.0,
    "aggregation": "auto",
    "task_seconds": 1.0,
    "round_deadline": 10.0,
    "min_task_samples": 25,
}
MCU_KINDS = ("host", "qemu")
MCU_BOARD = "ram64"
# Thread-pool sizes of the BLAS libraries numpy may be built with.
_BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

_NOTABLE = {
    "policy_switched",
    "node_joined",
    "node_left",
    "node_expired",
    "task_requeued",
    "job_started",
    "job_resumed",
    "job_completed",
    "job_cancelled",
}


class LocalClusterError(RuntimeError):
    """A process of the local cluster failed to start or died."""


def parse_throttles(text: str | None, workers: int) -> list[float]:
    if workers < 1:
        raise ValueError("--workers must be >= 1")
    if not text:
        return [1.0] * workers
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ValueError(f"--throttle {text!r}: comma-separated numbers expected") from exc
    if len(values) == 1:
        values *= workers
    if len(values) != workers:
        raise ValueError(f"--throttle gives {len(values)} values for {workers} workers")
    if any(not v >= 1.0 for v in values):
        raise ValueError("--throttle values must be >= 1")
    return values


def _daemon(module: str) -> list[str]:
    # ``python -m`` with this interpreter: works without the console scripts on PATH.
    return [sys.executable, "-P", "-m", module]


@dataclass
class LocalCluster:
    """The processes of a local cluster; use as a context manager so they always stop."""

    state_dir: Path
    workers: list[float]
    heartbeat_s: float = 0.5
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    address: str = ""
    mcus: int = 0
    mcu_kind: str = "host"
    mcu_baud: int | None = None  # host simulators paced like a UART at this rate
    device_lifetime_s: float = 3600.0
    devices: list[Launched] = field(default_factory=list)

    @property
    def nodes(self) -> int:
        """Cluster nodes once everything joined: the workers and one per MCU."""
        return len(self.workers) + self.mcus

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def _spawn(self, name: str, argv: list[str], *, device: bool = False) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = None
        if device:
            # A worker stands for one device: one BLAS thread each, so N emulated devices do
            # not fight over this machine's cores with N thread pools, and a throttled
            # worker's CPU clock (the training thread's) sees all of its training.
            env = {**os.environ, **{k: os.environ.get(k, "1") for k in _BLAS_THREADS}}
        with (self.log_dir / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                argv,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches us; we stop the daemons in order
            )

    def start(self, timeout_s: float = 60.0) -> None:
        port_file = self.state_dir / "leader.port"
        port_file.unlink(missing_ok=True)
        self._spawn(
            "leader",
            [
                *_daemon("eddl.leader.main"),
                "--bind",
                "127.0.0.1:0",
                "--state-dir",
                str(self.state_dir / "leader"),
                "--join-token",
                self.token,
                "--port-file",
                str(port_file),
                "--heartbeat-interval",
                str(self.heartbeat_s),
            ],
        )
        deadline = time.monotonic() + timeout_s
        while not (port_file.exists() and port_file.read_text().strip().isdigit()):
            self.check_alive()
            if time.monotonic() > deadline:
                raise LocalClusterError(f"the leader did not start within {timeout_s:.0f} s")
            time.sleep(0.05)
        self.address = f"127.0.0.1:{int(port_file.read_text())}"
        for i in range(len(self.workers)):
            self.start_worker(i)
        if self.mcus:
            self.devices.extend(self._launch_device() for _ in range(self.mcus))
            self.start_gateway()

    def _launch_device(self) -> Launched:
        try:
            if self.mcu_kind == "qemu":
                return start_qemu(MCU_BOARD, lifetime=self.device_lifetime_s)
            return start_sim("tcp", lifetime=self.device_lifetime_s, baud=self.mcu_baud)
        except FirmwareError as exc:
            raise LocalClusterError(f"cannot start an emulated MCU: {exc}") from exc

    def start_gateway(self) -> None:
        """Start the gateway worker, one ``--mcu`` per emulated device."""
        argv = [
            *_daemon("eddl.worker.main"),
            "--leader",
            self.address,
            "--node-id",
            "gateway",
            "--join-token",
            self.token,
        ]
        for device in self.devices:
            argv += ["--mcu", device.url]
        self._spawn("gateway", argv)

    def start_worker(self, index: int) -> None:
        """Start (or restart) worker ``index`` with its throttle."""
        name = f"worker-{index}"
        old = self.procs.get(name)
        if old is not None and old.poll() is None:
            raise LocalClusterError(f"{name} is already running")
        argv = [
            *_daemon("eddl.worker.main"),
            "--leader",
            self.address,
            "--node-id",
            name,
            "--join-token",
            self.token,
            "--throttle",
            str(self.workers[index]),
        ]
        self._spawn(name, argv, device=True)

    def stop_worker(self, index: int, grace_s: float = 10.0) -> int:
        """SIGTERM worker ``index`` (it leaves cleanly) and wait for it."""
        proc = self.procs[f"worker-{index}"]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return int(proc.returncode)

    def check_alive(self, names: Sequence[str] | None = None) -> None:
        for name, proc in self.procs.items():
            if names is not None and name not in names:
                continue
            if proc.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-1500:]
                raise LocalClusterError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self, grace_s: float = 10.0) -> dict[str, int]:
        """SIGTERM the workers (they leave cleanly), then the leader; SIGKILL stragglers."""
        order = [n for n in self.procs if n != "leader"] + (
            ["leader"] if "leader" in self.procs else []
        )
        codes: dict[str, int] = {}
        for group in (order[:-1], order[-1:]):
            for name in group:
                if self.procs[name].poll() is None:
                    self.procs[name].send_signal(signal.SIGTERM)
            for name in group:
                proc = self.procs[name]
                try:
                    proc.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
                codes[name] = int(proc.returncode)
        for device in self.devices:
            device.close()
        return codes

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _wait_workers(address: str, count: int, timeout_s: float, cluster: LocalCluster) -> None:
    deadline = time.monotonic() + timeout_s
    async with open_channel(address) as ch:
        stub = admin_pb2_grpc.AdminStub(ch)
        while True:
            nodes = await stub.ListNodes(admin_pb2.ListNodesRequest(), timeout=10)
            if sum(1 for n in nodes.nodes if n.state == "alive") >= count:
                return
            cluster.check_alive()
            if time.monotonic() > deadline:
                raise LocalClusterError(f"only {len(nodes.nodes)} of {count} nodes joined")
            await asyncio.sleep(0.1)


async def _progress(address: str, job_id: str, quiet: bool, every_s: float = 0.5) -> None:
    """Print one line per new model version (at most every ``every_s``) until cancelled."""
    last = -1
    async with open_channel(address) as ch:
        stub = admin_pb2_grpc.AdminStub(ch)
        while True:
            s = await stub.JobStatus(admin_pb2.JobStatusRequest(job_id=job_id), timeout=10)
            if s.envelope.model_version != last and not quiet:
                last = s.envelope.model_version
                acc = "-" if s.accuracy < 0 else f"{s.accuracy:.2%}"
                print(
                    f"  version {last:4d}  accuracy {acc:>7}  policy {s.policy:<5}  "
                    f"workers {s.workers}",
                    flush=True,
                )
            await asyncio.sleep(every_s)


async def run_local(args: argparse.Namespace, cluster: LocalCluster) -> dict[str, Any]:
    quiet = bool(args.json)
    default = MCU_JOB if cluster.mcus else DEFAULT_JOB
    spec = read_job_file(args.job) if args.job else dict(default)
    started = time.monotonic()
    await asyncio.to_thread(cluster.start)
    if not quiet:
        print(
            f"leader on {cluster.address}; {len(cluster.workers)} workers "
            f"(throttle {','.join(f'{t:g}' for t in cluster.workers)}); logs in "
            f"{cluster.log_dir}",
            flush=True,
        )
        if cluster.mcus:
            print(
                f"gateway with {cluster.mcus} emulated MCUs ({cluster.mcu_kind}): "
                + ", ".join(d.url for d in cluster.devices),
                flush=True,
            )
    await _wait_workers(cluster.address, cluster.nodes, args.timeout, cluster)
    job_id = await submit_job(cluster.address, spec)
    if not quiet:
        print(
            f"job {job_id}: {spec.get('algorithm')} on {spec.get('dataset')}, "
            f"{spec.get('aggregation', 'auto')} aggregation",
            flush=True,
        )
    switches: list[str] = []

    def on_event(event: admin_pb2.JobEvent) -> None:
        if event.kind == "policy_switched":
            switches.append(event.message)
        if event.kind in _NOTABLE and not quiet:
            print(f"  * {event.kind}: {event.message}", flush=True)

    progress = asyncio.create_task(_progress(cluster.address, job_id, quiet))
    try:
        final = await asyncio.wait_for(watch_job(cluster.address, job_id, on_event), args.timeout)
    except TimeoutError as exc:
        raise LocalClusterError(f"the job did not finish within {args.timeout:.0f} s") from exc
    finally:
        progress.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await progress
    async with open_channel(cluster.address) as ch:
        status = await admin_pb2_grpc.AdminStub(ch).JobStatus(
            admin_pb2.JobStatusRequest(job_id=job_id), timeout=10
        )
    detail = json.loads(status.detail_json) if status.detail_json else {}
    return {
        "job_id": job_id,
        "state": status.state,
        "accuracy": None if status.accuracy < 0 else status.accuracy,
        "model_version": status.envelope.model_version,
        "policy": status.policy,
        "policy_reason": status.policy_reason,
        "policy_switches": switches,
        "epochs": detail.get("epochs"),
        "workers": len(cluster.workers),
        "mcus": cluster.mcus,
        "throttle": cluster.workers,
        "seconds": round(time.monotonic() - started, 2),
        "final_event": final.message if final is not None else "",
    }


def _cmd_local(args: argparse.Namespace) -> int:
    try:
        throttles = parse_throttles(args.throttle, args.workers)
    except ValueError as exc:
        print(f"eddl local: {exc}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        state = (
            Path(args.state_dir)
            if args.state_dir
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="eddl-local-")))
        )
        if args.mcu < 0:
            print("eddl local: --mcu must be >= 0", file=sys.stderr)
            return 2
        if args.mcu_baud is not None and (args.mcu_kind != "host" or args.mcu_baud <= 0):
            print(
                "eddl local: --mcu-baud takes a positive rate, with --mcu-kind host",
                file=sys.stderr,
            )
            return 2
        cluster = stack.enter_context(
            LocalCluster(
                state,
                throttles,
                args.heartbeat,
                mcus=args.mcu,
                mcu_kind=args.mcu_kind,
                mcu_baud=args.mcu_baud,
                device_lifetime_s=args.timeout + 120.0,
            )
        )
        try:
            result = asyncio.run(run_local(args, cluster))
        except (LocalClusterError, grpc.aio.AioRpcError) as exc:
            detail = (
                f"{exc.code().name}: {exc.details()}"
                if isinstance(exc, grpc.aio.AioRpcError)
                else str(exc)
            )
            print(f"eddl local: {detail}", file=sys.stderr)
            return 1
        codes = cluster.stop()
        result["exit_codes"] = codes
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        acc = result["accuracy"]
        print(
            f"result: job {result['job_id']} {result['state']} — accuracy "
            f"{'-' if acc is None else f'{acc:.2%}'} at version {result['model_version']} "
            f"after {result['seconds']} s; policy {result['policy']} "
            f"({result['policy_reason']})"
        )
    return 0 if result["state"] == "completed" else 1


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("local", help="run a leader and N workers here, train, report")
    p.add_argument("--workers", type=int, default=3, help="number of worker processes")
    p.add_argument("--throttle", help="per-worker slow-down factors, e.g. 1,1,2,4")
    p.add_argument("--job", help="job file ([job] table); default: digits, auto aggregation")
    p.add_argument(
        "--mcu", type=int, default=0, help="add a gateway with N emulated microcontrollers"
    )
    p.add_argument(
        "--mcu-kind",
        choices=MCU_KINDS,
        default="host",
        help="host: the firmware's native simulator; qemu: Cortex-M3 boards with 64 KB RAM",
    )
    p.add_argument(
        "--mcu-baud",
        type=int,
        help="pace the host-simulator MCUs' links like a UART at this baud rate (8N1)",
    )
    p.add_argument("--heartbeat", type=float, default=0.5, help="heartbeat interval (s)")
    p.add_argument("--state-dir", help="keep state and logs here (default: a temporary dir)")
    p.add_argument("--timeout", type=float, default=300.0, help="give up after this long (s)")
    p.add_argument("--json", action="store_true", help="print only the result, as JSON")
    p.set_defaults(func=_cmd_local)
