"""``LeaderConfig``: what an ``eddl-leader`` daemon needs, from TOML ``[leader]``, env, flags."""

from __future__ import annotations

import math
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from eddl.config import ConfigError, check_address

__all__ = ["LeaderConfig"]


def default_bootstrap_bind(bind: str) -> str:
    host, _, port = bind.rpartition(":")
    return f"{host}:{int(port) + 1 if int(port) else 0}"


@dataclass
class LeaderConfig:
    """Settings of one leader daemon (``EDDL_LEADER_<FIELD>`` in the environment).

    ``join_token`` admits workers; it is required (a leader with no token would accept anyone).
    ``admin_token``, when set, must accompany SubmitJob/CancelJob. ``leaders`` is the list of
    leader addresses handed to joining nodes (empty: this leader's own address). ``port_file``
    receives the bound port once the
    server listens (how tests and ``eddl local`` find a port chosen by the OS).
    ``max_model_mib`` bounds what one job may ask of a node: its model's parameters, and
    apart a trainer's batch buffers (a job over it is refused at submission; ``eddl submit``
    checks the same default, ``--max-model-mib`` for a leader configured otherwise).
    ``follow``, when set, is the root leader's address: this leader then stands by, claims
    no term, and answers every Cluster and Admin call ``not-leader`` with that address.

    ``security`` is ``mtls`` (default): the cluster CA lives in ``<state_dir>/pki`` (key file
    0600), every port requires a cluster certificate, and nodes enrol with join tokens at
    ``bootstrap_bind`` (default: the main port + 1; port 0 when the main port is 0) whose
    port goes to ``bootstrap_port_file``. Node certificates live ``cert_lifetime_s``;
    ``tls_hosts`` adds names or addresses to the leader's own certificate; its key and
    certificate are kept in ``<state_dir>/pki/leader`` (for its healthcheck). ``token_dir``,
    for fleets that enrol unattended (a Compose cluster), receives at each start a worker
    and a gateway token (``worker.token``, ``gateway.token``) that admit many nodes for 30
    days. ``insecure``:
    plaintext, bound to loopback only, nodes admitted by ``join_token`` then by a session
    credential. ``off`` (plaintext, no credentials) exists for in-process tests only.
    ``coordinator`` (``etcd://HOST:PORT[,HOST:PORT...]``) makes this leader a candidate of an
    elected, replicated cluster (docs/high-availability.md); ``advertise`` is then the address
    workers and the other candidates reach it at. ``lease_ttl_s`` is the election lease (a dead
    root is replaced about this long after it died); an update is acknowledged once
    ``min_replicas`` live standbys hold its version (fewer when fewer are live).
    """

    bind: str = "127.0.0.1:50051"
    state_dir: Path = field(default_factory=lambda: Path("eddl-state"))
    join_token: str = ""
    admin_token: str = ""
    leader_id: str = field(default_factory=socket.gethostname)
    leaders: list[str] = field(default_factory=list)
    follow: str = ""
    port_file: Path | None = None
    heartbeat_interval_s: float = 1.0
    heartbeat_jitter: float = 0.1
    patience: int = 2
    chunk_bytes: int = 1 << 20
    max_update_bytes: int = 512 * 1024 * 1024
    max_fetch_samples: int = 65536
    max_model_mib: int = 256
    task_wait_ms: int = 1000
    grace_s: float = 2.0
    log_level: str = "INFO"
    metrics_bind: str = ""  # HOST:PORT of the Prometheus endpoint; "" serves none
    # The leader link's capacity, megabits/s: the auto policy's bandwidth signal and the
    # eddl_job_link_busy_ratio metric. 0: unknown (neither).
    link_capacity_mbps: float = 0.0
    # The network interface that carries that link (e.g. "eth0"): the root's split meter reads
    # its byte counters, every byte as it crosses. "": bytes of the metered calls only.
    link_interface: str = ""
    security: str = "mtls"
    bootstrap_bind: str = ""
    bootstrap_port_file: Path | None = None
    cert_lifetime_s: float = 24 * 3600.0
    tls_hosts: list[str] = field(default_factory=list)
    token_dir: Path | None = None
    coordinator: str = ""  # etcd://HOST:PORT[,...]; "" is a lone (or configured) leader
    advertise: str = ""
    lease_ttl_s: int = 3
    min_replicas: int = 1
    # Leader role splitting: "advise" logs the split policy's decisions; "auto" also regroups
    # the nodes (offering sub-leaders lead, workers are redirected). Hold and busy time of
    # the policy's hysteresis, and the window of synchronisations BUC and the worker count
    # are measured over, seconds.
    split: str = "advise"
    split_hold_s: float = 60.0
    split_busy_for_s: float = 10.0
    split_window_s: float = 20.0

    def __post_init__(self) -> None:
        check_address(self.bind, "leader.bind")
        if self.metrics_bind:
            check_address(self.metrics_bind, "leader.metrics_bind")
        if self.follow:
            check_address(self.follow, "leader.follow")
        if self.security not in ("mtls", "insecure", "off"):
            raise ConfigError("leader.security must be mtls or insecure")
        if self.security != "mtls" and not self.join_token:
            raise ConfigError("leader.join_token is required without mtls (workers present it)")
        if self.security == "insecure" and self.bind.rpartition(":")[0].strip("[]") not in (
            "127.0.0.1",
            "::1",
            "localhost",
        ):
            raise ConfigError("leader: --insecure binds to loopback only (127.0.0.1 or ::1)")
        if self.bootstrap_bind:
            check_address(self.bootstrap_bind, "leader.bootstrap_bind")
        if not 2.0 <= self.cert_lifetime_s <= 365 * 24 * 3600.0:
            raise ConfigError("leader.cert_lifetime_s must be within 2 s .. 1 year")
        if self.coordinator:
            from eddl.leader.etcd import parse_coordinator

            try:
                parse_coordinator(self.coordinator)
            except ValueError as exc:
                raise ConfigError(f"leader.coordinator: {exc}") from exc
            if self.follow:
                raise ConfigError("leader.coordinator and leader.follow exclude each other")
            if not self.advertise:
                raise ConfigError("leader.advertise (HOST:PORT) is required with a coordinator")
            check_address(self.advertise, "leader.advertise")
            if not 2 <= self.lease_ttl_s <= 60 or not 0 <= self.min_replicas <= 4:
                raise ConfigError("leader.lease_ttl_s must be 2..60 and min_replicas 0..4")
        if self.coordinator and not self.join_token:
            raise ConfigError(
                "leader.join_token is required with a coordinator (candidates present it to "
                "each other on the Peer service)"
            )
        if not math.isfinite(self.heartbeat_interval_s) or self.heartbeat_interval_s <= 0:
            raise ConfigError("leader.heartbeat_interval_s must be > 0")
        if not math.isfinite(self.link_capacity_mbps) or not 0 <= self.link_capacity_mbps <= 1e6:
            raise ConfigError("leader.link_capacity_mbps must be within 0 .. 1000000 (0: unknown)")
        if self.link_interface and not self.link_capacity_mbps:
            raise ConfigError(
                "leader.link_interface needs leader.link_capacity_mbps (the rate its counters "
                "are measured against)"
            )
        if self.link_interface and not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,15}", self.link_interface):
            raise ConfigError(
                f"leader.link_interface {self.link_interface[:64]!r} is not a network "
                "interface's name"
            )
        if not 0 <= self.heartbeat_jitter < 1:
            raise ConfigError("leader.heartbeat_jitter must be in [0, 1)")
        if self.patience < 1:
            raise ConfigError("leader.patience must be >= 1")
        if self.split not in ("advise", "auto"):
            raise ConfigError("leader.split must be advise or auto")
        for name in ("split_hold_s", "split_busy_for_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 86400):
                raise ConfigError(f"leader.{name} must be within 0 .. 86400 seconds")
        if not (math.isfinite(self.split_window_s) and 0 < self.split_window_s <= 86400):
            raise ConfigError("leader.split_window_s must be within (0, 86400] seconds")
        if not 1024 <= self.chunk_bytes <= 3 << 20:
            raise ConfigError("leader.chunk_bytes must be within 1 KiB .. 3 MiB")
        if self.max_update_bytes <= 0 or self.max_fetch_samples <= 0:
            raise ConfigError("leader.max_update_bytes and max_fetch_samples must be positive")
        if not 1 <= self.max_model_mib <= 1 << 20:
            raise ConfigError("leader.max_model_mib must be within 1 .. 1048576")
        if self.task_wait_ms < 0 or self.grace_s < 0:
            raise ConfigError("leader.task_wait_ms and grace_s must be >= 0")
