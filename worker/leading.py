"""``--can-lead``: the group a worker leads once its root promotes it.

Beside the worker loop the process runs a sub-leader (:func:`~eddl.leader.subleader_daemon.
start_group`, node id ``<worker>.lead``) serving its group on the ``can_lead`` address.

* ``--insecure``: the sub-leader starts with the worker, joins the root with its offer
  (``NodeInfo.lead_address``, ``lead_worker``) and stands by until promoted.
* mTLS: a sub-leader needs a certificate of role ``subleader``, which a worker does not hold
  and cannot ask for. The worker's own ``Join`` carries the offer instead; when the root
  promotes its group, the root's heartbeat reply carries a single-use token of role
  ``subleader`` that admits ``<worker>.lead`` only (``HeartbeatReply.lead_token``). With it
  the worker enrols its sub-leader at the root's bootstrap port, as a sub-leader daemon does
  (key and certificate kept in ``<pki_dir>/lead``), and only then serves the group over mTLS:
  the sub-leader joins the root with that certificate, holds the root's revocation list and
  renews its certificate (:class:`~eddl.leader.subleader_credentials.SubLeaderCredentials`).
  A token that cannot be used (enrolment refused or unreachable) is logged, and the next
  beat's token is tried.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from pathlib import Path

from eddl.leader.subleader import SubLeaderSettings
from eddl.leader.subleader_daemon import RunningGroup, start_group
from eddl.log import get_logger
from eddl.security import pki
from eddl.security.enrol import EnrolmentError
from eddl.security.node import NodeSecurity, bootstrap_address, prepare
from eddl.worker.config import WorkerConfig

__all__ = ["CanLead"]

log = get_logger("worker.lead")


class CanLead:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.node_id = f"{config.node_id}.lead"
        self.group: RunningGroup | None = None
        self._starting: asyncio.Task[None] | None = None

    async def stand_by(self) -> None:
        """``--insecure``: serve the group now; it offers to lead and stands by."""
        if self.config.security != "mtls":
            self.group = await self._start(None, None)

    def promoted(self, token: str) -> None:
        """The root promoted this worker's group (mTLS): enrol its sub-leader and serve."""
        if self.config.security != "mtls" or self.group is not None or self._starting:
            return
        self._starting = asyncio.create_task(self._enrol_and_serve(token))

    async def _enrol_and_serve(self, token: str) -> None:
        directory = Path(self.config.pki_dir) / "lead"
        host = self.config.can_lead.rpartition(":")[0].strip("[]")
        hosts = ("localhost", "127.0.0.1", socket.gethostname(), host)
        try:
            security = await prepare(
                "mtls",
                directory,
                node_id=self.node_id,
                token=token[:256],
                bootstrap=self.config.bootstrap or bootstrap_address(self.config.leaders[0]),
                hosts=tuple(dict.fromkeys(h for h in hosts if h)),
            )
            assert security.identity is not None
            if security.identity.info.role != "subleader":
                raise EnrolmentError(f"{directory} holds no certificate of role subleader")
            self.group = await self._start(security, directory)
            log.info("leading a group", node=self.node_id, address=self.config.can_lead)
        except (EnrolmentError, pki.PkiError, ValueError, RuntimeError, OSError) as exc:
            log.error("cannot lead the group", node=self.node_id, error=str(exc))
        finally:
            self._starting = None

    async def _start(self, security: NodeSecurity | None, directory: Path | None) -> RunningGroup:
        # With mtls the members' certificates admit them; the token is this process's own.
        token = self.config.join_token if security is None else secrets.token_hex(16)
        settings = SubLeaderSettings(node_id=self.node_id, join_token=token)
        return await start_group(
            settings,
            bind=self.config.can_lead,
            upstream=self.config.leaders[0],
            security=security,
            pki_dir=directory,
            lead_worker=True,
        )

    async def stop(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._starting
        if self.group is not None:
            await self.group.stop()
