"""A leader and N workers (and optionally a gateway with emulated MCUs) as local processes.

    with LocalCluster(state_dir, [1.0, 1.0, 2.0]) as cluster:
        cluster.start()
        await cluster.wait_for_nodes()
        ...                      # submit jobs to cluster.address

Daemons run as ``python -P -m eddl.leader.main`` / ``eddl.worker.main`` with this interpreter:
``-P`` keeps the working directory off ``sys.path``, so started inside a source checkout they
import the installed package, not the checkout's ``eddl/`` folder (see :mod:`eddl.childproc`).

Every process (daemons and emulated devices) is started bound to this process with Linux's
``PR_SET_PDEATHSIG``: if this process is killed, even with SIGKILL, the kernel kills them too.
The death signal follows the *thread* that forked a child, so all of them are started from one
thread that the cluster keeps until :meth:`LocalCluster.stop` has reaped them; ``start`` can
then be called from any thread (``asyncio.to_thread`` included) without its end killing the
cluster. Each daemon gets a session of its own, so a Ctrl-C in the terminal reaches only the
caller, which stops them in order: workers first (they leave cleanly), then the leader.

Security is the daemons' default, mutual TLS: before the leader starts, a throw-away cluster
CA is made in its state directory; each worker and the gateway get a single-use join token
and enrol at the leader's bootstrap port (their keys and certificates under ``nodes/``), and
this process calls the leader with an admin certificate (:attr:`LocalCluster.identity`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from eddl.childproc import bound_to_parent, python_module
from eddl.mcu.launch import FirmwareError, Launched, start_qemu, start_sim
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc
from eddl.security import pki
from eddl.security.admin import admin_channel
from eddl.security.authority import Authority
from eddl.security.tls import Identity

__all__ = [
    "DEFAULT_JOB",
    "MCU_BOARD",
    "MCU_JOB",
    "MCU_KINDS",
    "LocalCluster",
    "LocalClusterError",
    "parse_throttles",
]

_T = TypeVar("_T")

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


class LocalClusterError(RuntimeError):
    """A process of the local cluster failed to start or died."""


def parse_throttles(text: str | None, workers: int) -> list[float]:
    """``"1,1,2,4"`` -> one slow-down factor per worker (one value applies to all)."""
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


@dataclass
class LocalCluster:
    """The processes of a local cluster; use as a context manager so they always stop."""

    state_dir: Path
    workers: list[float]
    heartbeat_s: float = 0.5
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    address: str = ""
    bootstrap: str = ""
    mcus: int = 0
    mcu_kind: str = "host"
    mcu_baud: int | None = None  # host simulators paced like a UART at this rate
    device_lifetime_s: float = 3600.0
    devices: list[Launched] = field(default_factory=list)
    cert_lifetime_s: float = 24 * 3600.0
    identity: Identity | None = None  # the admin certificate the cluster's caller uses
    # The daemons' interpreter (empty: this one); another venv runs another EDDL install.
    python: str = ""
    _authority: Authority | None = field(default=None, init=False, repr=False)
    # The one thread that starts every child (see the module docstring): kept until stop().
    _spawner: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)

    @property
    def nodes(self) -> int:
        """Cluster nodes once everything joined: the workers and one per MCU."""
        return len(self.workers) + self.mcus

    @property
    def admin_dir(self) -> Path:
        """The admin certificate of this cluster, for ``EDDL_CONFIG_DIR``."""
        return self.state_dir / "admin"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def _in_spawner(self, fn: Callable[[], _T]) -> _T:
        if self._spawner is None:
            self._spawner = ThreadPoolExecutor(1, thread_name_prefix="eddl-cluster-spawner")
        return self._spawner.submit(fn).result()

    def _spawn(self, name: str, argv: list[str], *, device: bool = False) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = None
        if device:
            # A worker stands for one device: one BLAS thread each, so N emulated devices do
            # not fight over this machine's cores with N thread pools, and a throttled
            # worker's CPU clock (the training thread's) sees all of its training.
            env = {**os.environ, **{k: os.environ.get(k, "1") for k in _BLAS_THREADS}}

        def popen() -> None:
            with (self.log_dir / f"{name}.log").open("ab") as log:
                # Stored by the spawner itself, so a caller interrupted while waiting for it
                # cannot lose track of a process that did start.
                self.procs[name] = subprocess.Popen(
                    bound_to_parent(argv),
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # Ctrl-C reaches the caller, which stops us in order
                )

        self._in_spawner(popen)

    def _provision(self) -> Authority:
        """The leader's CA (made now if new) and this process's admin certificate."""
        authority = Authority(self.state_dir / "leader" / "pki", lifetime_s=self.cert_lifetime_s)
        key = pki.new_key()
        issued = authority.issue(pki.make_csr(key, "local-admin"), "admin")
        self.identity = Identity(pki.key_pem(key), issued.cert_pem, authority.ca_pem)
        # For the `eddl` command against this cluster: EDDL_CONFIG_DIR=<state_dir>/admin.
        self.identity.save(self.admin_dir)
        self._authority = authority
        return authority

    def _security_args(self, node: str, role: str) -> list[str]:
        """A node's flags: its identity directory and, until it has one, a join token."""
        assert self._authority is not None
        directory = self.state_dir / "nodes" / node
        args = ["--pki-dir", str(directory), "--bootstrap", self.bootstrap]
        if not Identity.exists(directory):
            token = self._authority.new_token(role, ttl_s=600.0)
            args += ["--enrol-token", str(token)]
        return args

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the leader, wait for its port, then the workers (and devices and gateway)."""
        port_file = self.state_dir / "leader.port"
        boot_file = self.state_dir / "bootstrap.port"
        port_file.unlink(missing_ok=True)
        boot_file.unlink(missing_ok=True)
        self._provision()
        self._spawn(
            "leader",
            python_module(
                "eddl.leader.main",
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
                "--bootstrap-port-file",
                str(boot_file),
                "--cert-lifetime",
                str(self.cert_lifetime_s),
                python=self.python,
            ),
        )
        deadline = time.monotonic() + timeout_s
        # Both ports are known once both files hold a number (the leader writes each as its
        # server starts; their order is not part of its interface).
        while not (_port_written(port_file) and _port_written(boot_file)):
            self.check_alive()
            if time.monotonic() > deadline:
                raise LocalClusterError(f"the leader did not start within {timeout_s:.0f} s")
            time.sleep(0.05)
        self.address = f"127.0.0.1:{int(port_file.read_text())}"
        self.bootstrap = f"127.0.0.1:{int(boot_file.read_text())}"
        for i in range(len(self.workers)):
            self.start_worker(i)
        if self.mcus:
            for _ in range(self.mcus):
                self._in_spawner(self._launch_device)
            self.start_gateway()

    def _launch_device(self) -> None:
        try:
            if self.mcu_kind == "qemu":
                device = start_qemu(MCU_BOARD, lifetime=self.device_lifetime_s)
            else:
                device = start_sim("tcp", lifetime=self.device_lifetime_s, baud=self.mcu_baud)
        except FirmwareError as exc:
            raise LocalClusterError(f"cannot start an emulated MCU: {exc}") from exc
        self.devices.append(device)

    def start_gateway(self) -> None:
        """Start the gateway worker, one ``--mcu`` per emulated device."""
        argv = python_module(
            "eddl.worker.main",
            "--leader",
            self.address,
            "--node-id",
            "gateway",
            "--join-token",
            self.token,
            *self._security_args("gateway", "gateway"),
            python=self.python,
        )
        for device in self.devices:
            argv += ["--mcu", device.url]
        self._spawn("gateway", argv)

    def start_worker(self, index: int) -> None:
        """Start (or restart) worker ``index`` with its throttle."""
        name = f"worker-{index}"
        old = self.procs.get(name)
        if old is not None and old.poll() is None:
            raise LocalClusterError(f"{name} is already running")
        argv = python_module(
            "eddl.worker.main",
            "--leader",
            self.address,
            "--node-id",
            name,
            "--join-token",
            self.token,
            "--throttle",
            str(self.workers[index]),
            *self._security_args(name, "worker"),
            python=self.python,
        )
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
        """Raise :class:`LocalClusterError` with the log's tail if a process has exited."""
        for name, proc in list(self.procs.items()):
            if names is not None and name not in names:
                continue
            if proc.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-1500:]
                raise LocalClusterError(f"{name} exited with {proc.returncode}:\n{tail}")

    async def wait_for_nodes(self, count: int | None = None, timeout_s: float = 60.0) -> None:
        """Wait until ``count`` nodes (default: every node of this cluster) are alive."""
        want = self.nodes if count is None else count
        deadline = time.monotonic() + timeout_s
        async with admin_channel(self.address, self.identity) as ch:
            stub = admin_pb2_grpc.AdminStub(ch)
            while True:
                nodes = await stub.ListNodes(admin_pb2.ListNodesRequest(), timeout=10)
                if sum(1 for n in nodes.nodes if n.state == "alive") >= want:
                    return
                self.check_alive()
                if time.monotonic() > deadline:
                    raise LocalClusterError(f"only {len(nodes.nodes)} of {want} nodes joined")
                await asyncio.sleep(0.1)

    def stop(self, grace_s: float = 10.0) -> dict[str, int]:
        """SIGTERM the workers (they leave cleanly), then the leader; SIGKILL stragglers.

        Returns each daemon's exit code. Safe to call more than once.
        """
        if self._spawner is not None:
            # A start the caller stopped waiting for (a signal) may still be under way: let it
            # finish, so that everything it started is in ``procs`` and stopped below.
            self._spawner.submit(lambda: None).result()
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
        if self._spawner is not None:
            # Only now: the end of the spawner thread is the death signal of its children.
            self._spawner.shutdown()
            self._spawner = None
        return codes

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _port_written(path: Path) -> bool:
    """``path`` exists and holds a port number (a file being written reads as not yet)."""
    try:
        return path.read_text().strip().isdigit()
    except FileNotFoundError:
        return False
