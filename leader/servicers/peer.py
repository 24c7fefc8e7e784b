"""``PeerServicer``: the Peer service of a leader candidate (replication from the root).

Translation only: chunks become :class:`~eddl.leader.standby.Chunk`\\ s for the standby's
assembler, the standby's checks and store write run beside the event loop, typed errors
become status codes. ``on_applied`` hears each persisted payload (the candidate publishes
its new version).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from eddl.leader.servicers.common import guarded
from eddl.leader.standby import Chunk, ReplicaAck, Standby
from eddl.proto.v1 import peer_pb2, peer_pb2_grpc

__all__ = ["PeerServicer"]


class PeerServicer(peer_pb2_grpc.PeerServicer):
    def __init__(
        self,
        standby: Standby,
        on_applied: Callable[[ReplicaAck], Awaitable[None]] | None = None,
    ) -> None:
        self.standby = standby
        self.on_applied = on_applied

    async def Replicate(
        self,
        request_iterator: AsyncIterator[peer_pb2.ReplicaChunk],
        context: grpc.aio.ServicerContext,
    ) -> peer_pb2.ReplicaAck:
        ack = await guarded(context, self._replicate(request_iterator))
        return peer_pb2.ReplicaAck(term=ack.term, seq=ack.seq, version=ack.version)

    async def _replicate(self, chunks: AsyncIterator[peer_pb2.ReplicaChunk]) -> ReplicaAck:
        assembler = self.standby.assembler()
        async for c in chunks:
            assembler.add(
                Chunk(
                    c.credential,
                    c.term,
                    c.leader_id,
                    c.seq,
                    c.version,
                    c.snapshot,
                    c.index,
                    c.count,
                    c.total_bytes,
                    c.sha256,
                    c.data,
                )
            )
        ack = await asyncio.to_thread(self.standby.accept, assembler)
        if self.on_applied is not None:
            await self.on_applied(ack)
        return ack
