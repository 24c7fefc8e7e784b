"""A running sub-leader's credentials: its upward channel, the root's revocations, renewal.

Over mutual TLS a sub-leader holds one certificate (role ``subleader``) for two ends: the
client certificate of its channel to its leader, and the server certificate of its group's
endpoint. :class:`SubLeaderCredentials` keeps both fresh while the process runs:

* **Revocations.** The group's endpoint refuses what the root revoked: a
  :class:`~eddl.security.revocations.RevocationWatch` holds the root's list over the upward
  channel (pushed at each change), and the endpoint's one authorization point checks every
  call's certificate against it, as the root does. The group is served only once a first
  list is held (:meth:`start`).
* **Renewal.** At two thirds of its certificate's lifetime the sub-leader renews it at its
  leader, as a worker does (:class:`~eddl.security.enrol.Renewer`); then new upward calls go
  over a new channel (calls in flight finish on the old one, closed one renewal later), the
  revocation stream reopens on it, and the endpoint serves the new certificate on new
  connections (:class:`~eddl.security.tls.ServerCertificates`), without a restart.

In ``--insecure`` mode there are no certificates: the endpoint checks session credentials and
none of this runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import grpc

from eddl.log import get_logger
from eddl.security.authz import Authorizer, CertificateAuth, SessionAuth
from eddl.security.enrol import Renewer
from eddl.security.node import NodeSecurity
from eddl.security.revocations import RevocationList, RevocationWatch
from eddl.security.tls import Identity

__all__ = ["SubLeaderCredentials", "group_interceptors"]

log = get_logger("leader.subleader")


def group_interceptors(
    security: NodeSecurity, join_token: str, revocations: RevocationList
) -> list[Authorizer]:
    """The group endpoint's one authorization point: members' cluster certificates not on the
    root's revocation list (mtls), else session credentials from ``Join``. With mtls
    ``join_token`` is the sub-leader's own secret, written into every Join whose certificate
    was verified (as the root does)."""
    if security.identity is None:
        return [Authorizer(SessionAuth())]
    return [Authorizer(CertificateAuth(revocations.is_revoked, join_token=join_token))]


class SubLeaderCredentials:
    def __init__(
        self,
        security: NodeSecurity,
        upstream: str,
        directory: Path | None = None,
        *,
        retry_s: float = 1.0,
    ) -> None:
        if security.identity is not None and directory is None:
            raise ValueError("a sub-leader with a certificate needs the directory it is kept in")
        self.security = security
        self.upstream = upstream
        self.directory = directory
        self.channel = security.channel(upstream)
        self.revocations = RevocationList()
        self.watch = RevocationWatch(self.revocations, lambda: self.channel, retry_s=retry_s)
        self.renewer: Renewer | None = None
        if security.identity is not None and directory is not None:
            self.renewer = Renewer(directory, security.identity, lambda: [upstream], self._renewed)
        # Hear each new upward channel (the uplink's stub moves to it).
        self.on_channel: list[Callable[[grpc.aio.Channel], None]] = []
        self._retired: list[grpc.aio.Channel] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._watching: asyncio.Task[None] | None = None

    def interceptors(self, join_token: str) -> list[Authorizer]:
        return group_interceptors(self.security, join_token, self.revocations)

    async def start(self, within_s: float) -> None:
        """With a certificate: watch the root's revocations and renew; return once a first
        revocation list is held (``TimeoutError`` after ``within_s``)."""
        if self.security.identity is None:
            return
        self._watching = asyncio.create_task(self.watch.run())
        assert self.renewer is not None
        self._tasks.append(asyncio.create_task(self.renewer.run()))
        try:
            async with asyncio.timeout(within_s):
                await self.watch.ready.wait()
        except TimeoutError:
            await self.close()
            raise

    async def _renewed(self, identity: Identity) -> None:
        self.security.renewed(identity)
        self._retired.append(self.channel)
        self.channel = self.security.channel(self.upstream)
        for listener in self.on_channel:
            listener(self.channel)
        # The stream on the old channel would outlive the certificate it was opened with.
        if self._watching is not None:
            await _cancel(self._watching)
            self._watching = asyncio.create_task(self.watch.run())
        while len(self._retired) > 1:  # older than the previous certificate: calls are over
            await self._retired.pop(0).close()

    async def close(self) -> None:
        for task in [*self._tasks, *([self._watching] if self._watching else [])]:
            await _cancel(task)
        self._tasks, self._watching = [], None
        for channel in [*self._retired, self.channel]:
            await channel.close()
        self._retired = []


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
