"""What a node tells the leader about itself: its role, what it joins with, what it beats.

A :class:`~eddl.worker.daemon.WorkerDaemon` speaks for one node. On this host that node is the
Python worker (:class:`HostPresence`: this machine's profile, load and measured links); a
gateway's daemons speak for microcontrollers
(:class:`~eddl.worker.gateway.McuPresence`: the device's HELLO and benchmark). The presence
builds the wire messages; the daemon sends them and handles the replies.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import psutil

from eddl import __version__
from eddl.profiler import collect_static, dynamic_to_proto, static_to_proto
from eddl.profiler.convert import link_to_proto
from eddl.profiler.dynamic import DynamicCollector
from eddl.proto.v1 import cluster_pb2, profile_pb2

if TYPE_CHECKING:
    from eddl.worker.daemon import WorkerDaemon

__all__ = ["HostPresence", "Presence"]


class Presence(ABC):
    """The node a daemon speaks for, as the leader sees it."""

    role = "worker"

    @abstractmethod
    async def join_request(self, node: WorkerDaemon) -> cluster_pb2.JoinRequest:
        """What the node says about itself when it joins (again)."""

    @abstractmethod
    async def beat_request(self, node: WorkerDaemon) -> cluster_pb2.HeartbeatRequest:
        """One heartbeat of the node."""


class HostPresence(Presence):
    """A Python worker on this host: its static and dynamic profile, its load, its links."""

    def __init__(self) -> None:
        self._static: profile_pb2.StaticProfile | None = None
        self._dynamic = DynamicCollector()

    async def join_request(self, node: WorkerDaemon) -> cluster_pb2.JoinRequest:
        if self._static is None:
            static = await asyncio.to_thread(collect_static, node.node_id, self.role)
            self._static = static_to_proto(static)
        config = node.config
        return cluster_pb2.JoinRequest(
            envelope=node.envelope(),
            role=self.role,
            join_token=config.join_token,
            info=cluster_pb2.NodeInfo(
                hostname=socket.gethostname(),
                cpu_count=os.cpu_count() or 1,
                memory_bytes=psutil.virtual_memory().total,
                datasets=list(config.datasets),
                throttle=config.throttle,
                version=__version__,
                # Over mTLS a --can-lead worker offers its group itself (eddl.worker.leading).
                lead_address=config.can_lead if config.security == "mtls" else "",
                lead_worker=bool(config.can_lead) and config.security == "mtls",
            ),
            profile=profile_pb2.Profile(static=self._static),
        )

    async def beat_request(self, node: WorkerDaemon) -> cluster_pb2.HeartbeatRequest:
        """Load, dynamic profile and the link estimates of the node's real transfers."""
        return cluster_pb2.HeartbeatRequest(
            envelope=node.envelope(),
            dynamic=dynamic_to_proto(self._dynamic.sample()),
            network=profile_pb2.NetworkProfile(
                links=[link_to_proto(e) for e in node.links.estimates(time.time())]
            ),
            load=cluster_pb2.NodeLoad(
                cpu_percent=psutil.cpu_percent(interval=None),
                memory_used_bytes=psutil.Process().memory_info().rss,
                samples_per_second=node.samples_per_second,
                state=node.state,
            ),
        )
