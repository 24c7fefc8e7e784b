"""``WorkerConfig``: what an ``eddl-worker`` daemon needs, from TOML ``[worker]``, env, flags."""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass, field

from eddl.config import ConfigError, check_address

__all__ = ["WorkerConfig", "mcu_names"]


def _default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class WorkerConfig:
    """Settings of one worker daemon (``EDDL_WORKER_<FIELD>`` in the environment).

    ``leaders`` is an ordered list of leader addresses: the worker talks to the first that
    answers and moves down the list when one goes away (leader failover builds on this).
    ``datasets`` names the datasets this worker holds locally (prefetched); for any other
    dataset it fetches samples by index from the leader. ``throttle`` F >= 1 makes the worker
    F times slower (it idles (F - 1) x the training time after each task): an aid for demos and
    benchmarks of heterogeneity.

    ``mcu`` turns the daemon into a gateway: for each serial URL (a device path such as
    ``/dev/eddl/mcu-0``, ``socket://HOST:PORT``, any pyserial URL) it speaks to the
    microcontroller there and joins the cluster on its behalf as a node of its own, named
    ``<node_id>.<device name>``; a gateway trains nothing itself. ``mcu_baud`` applies to real
    serial ports, ``mcu_reply_timeout_s`` to one request, ``mcu_train_timeout_s`` to one TRAIN,
    ``mcu_max_buffer`` caps the samples per TRAIN (the arena caps it too), and a lost device is
    looked for again every ``mcu_retry_s``. ``mcu_verify`` re-runs every device task with the
    numpy reference on the gateway and pushes nothing that differs (for commissioning boards:
    it costs the gateway the training time of every task).

    ``security`` is ``mtls`` (default): the node's key and certificate live in ``pki_dir``; a
    node without them enrols first with ``enrol_token`` (``eddl token create``) at the
    leader's ``bootstrap`` port (default: the first leader's port + 1); ``enrol_token_file``
    names a file holding the token instead. ``insecure`` speaks
    plaintext to a loopback leader, authenticated by ``join_token`` and a session credential.

    ``can_lead`` (HOST:PORT, ``--can-lead``): the worker also offers to lead a group. Beside its
    worker loop the process runs a sub-leader (node ``<node_id>.lead``, the same code as
    ``eddl-leader --upstream``) that joins the first leader, serves its group on that address
    and stands by until the root promotes it (``--split auto``); the root plans such workers
    after the sub-leader daemons. Over mTLS the worker's own join makes the offer and the
    sub-leader starts only once promoted, with a certificate of role ``subleader`` enrolled
    with the token the root hands it then (:mod:`eddl.worker.leading`); the address needs a
    fixed port there. Not for a gateway (``mcu``).
    """

    leaders: list[str] = field(default_factory=lambda: ["127.0.0.1:50051"])
    node_id: str = field(default_factory=_default_node_id)
    join_token: str = ""
    datasets: list[str] = field(default_factory=lambda: ["digits", "mnist-10k"])
    throttle: float = 1.0
    poll_ms: int = 1000
    chunk_bytes: int = 1 << 20
    max_model_bytes: int = 512 * 1024 * 1024
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    rpc_timeout_s: float = 30.0
    log_level: str = "INFO"
    # The worker's own endpoint: gRPC health (SERVING while joined to a leader), reflection
    # and the Probe service, so leaders and operators can check it and measure its link.
    # An empty string serves nothing.
    bind: str = "127.0.0.1:0"
    port_file: str | None = None
    mcu: list[str] = field(default_factory=list)
    mcu_baud: int = 115200
    mcu_reply_timeout_s: float = 2.0
    mcu_train_timeout_s: float = 120.0
    mcu_max_buffer: int = 250
    mcu_retry_s: float = 2.0
    mcu_verify: bool = False
    metrics_bind: str = ""  # HOST:PORT of the Prometheus endpoint; "" serves none
    security: str = "mtls"  # "mtls", "insecure" (loopback, session); "off" only in-process
    pki_dir: str = "eddl-node"
    enrol_token: str = ""
    enrol_token_file: str = ""
    bootstrap: str = ""
    can_lead: str = ""  # HOST:PORT this worker serves a group on once promoted; "": never

    def __post_init__(self) -> None:
        if not self.leaders:
            raise ConfigError("worker.leaders: at least one leader address is needed")
        for address in self.leaders:
            check_address(address, "worker.leaders")
        if self.security not in ("mtls", "insecure", "off"):
            raise ConfigError("worker.security must be mtls or insecure")
        if self.bootstrap:
            check_address(self.bootstrap, "worker.bootstrap")
        if self.can_lead:
            check_address(self.can_lead, "worker.can_lead")
            if self.security not in ("insecure", "mtls") or self.mcu:
                raise ConfigError(
                    "worker.can_lead: a gateway (--mcu) or a worker without security cannot "
                    "lead a group; run `eddl-leader --upstream` instead"
                )
            if self.security == "mtls" and self.can_lead.rpartition(":")[2] == "0":
                raise ConfigError(
                    "worker.can_lead: over mTLS the address is offered to the root before the "
                    "group is served, so it needs a fixed port (not 0)"
                )
        if not self.node_id or any(c.isspace() for c in self.node_id):
            raise ConfigError(f"worker.node_id: {self.node_id!r} must be non-empty, no spaces")
        if not math.isfinite(self.throttle) or self.throttle < 1.0:
            raise ConfigError(f"worker.throttle: {self.throttle} must be a finite number >= 1")
        if self.poll_ms <= 0:
            raise ConfigError("worker.poll_ms must be positive")
        if not 1024 <= self.chunk_bytes <= 3 << 20:
            raise ConfigError("worker.chunk_bytes must be within 1 KiB .. 3 MiB")
        if self.max_model_bytes <= 0:
            raise ConfigError("worker.max_model_bytes must be positive")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ConfigError("worker: need 0 < backoff_initial_s <= backoff_max_s")
        if self.rpc_timeout_s <= 0:
            raise ConfigError("worker.rpc_timeout_s must be positive")
        if self.bind:
            check_address(self.bind, "worker.bind")
        if self.metrics_bind:
            check_address(self.metrics_bind, "worker.metrics_bind")
        self._check_mcu()

    def _check_mcu(self) -> None:
        if len(set(self.mcu)) != len(self.mcu):
            raise ConfigError(f"worker.mcu: a device is listed twice: {self.mcu}")
        for url in self.mcu:
            if not url or any(c.isspace() for c in url):
                raise ConfigError(f"worker.mcu: {url!r} is not a serial URL or device path")
        names = mcu_names(self.mcu)
        if len(set(names)) != len(names):
            raise ConfigError(f"worker.mcu: two devices would share a node name: {names}")
        if self.mcu_baud <= 0:
            raise ConfigError("worker.mcu_baud must be positive")
        for name in ("mcu_reply_timeout_s", "mcu_train_timeout_s", "mcu_retry_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"worker.{name} must be a positive number, got {value}")
        if not 1 <= self.mcu_max_buffer <= 0xFFFF:
            raise ConfigError("worker.mcu_max_buffer must be within 1..65535 samples")

    def mcu_node_ids(self) -> list[str]:
        """The cluster node id of each device in ``mcu``, in order."""
        return [f"{self.node_id}.{name}" for name in mcu_names(self.mcu)]


def mcu_names(urls: list[str]) -> list[str]:
    """A short name per device: the file name of a device path (``/dev/eddl/mcu-0`` ->
    ``mcu-0``, stable when a udev rule names the device), else ``mcu<position>``."""
    names = []
    for i, url in enumerate(urls):
        base = url.rstrip("/").rsplit("/", 1)[-1] if "://" not in url else ""
        ok = base and not base.isdigit() and all(c.isalnum() or c in "._-" for c in base)
        names.append(base if ok else f"mcu{i}")
    return names
