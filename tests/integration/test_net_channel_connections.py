"""Channels to one address share gRPC's one connection, unless each asks for its own."""

from __future__ import annotations

import grpc
import pytest

from eddl.net import open_channel
from eddl.security.node import NodeSecurity

METHOD = "/test.Peer/Who"


def _handler() -> grpc.GenericRpcHandler:
    async def who(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return str(context.peer()).encode()

    return grpc.method_handlers_generic_handler(
        "test.Peer", {"Who": grpc.unary_unary_rpc_method_handler(who)}
    )


async def _peers(channels: list[grpc.aio.Channel]) -> set[bytes]:
    peers = set()
    for channel in channels:
        call = channel.unary_unary(METHOD)
        peers.add(await call(b"", timeout=10))
    return peers


@pytest.mark.parametrize("own", [False, True])
async def test_own_connection_gives_each_channel_its_own_tcp_connection(own: bool) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    address = f"127.0.0.1:{port}"
    channels = [open_channel(address, own_connection=own) for _ in range(3)]
    channels += [NodeSecurity("insecure", own_connection=own).channel(address) for _ in range(2)]
    try:
        peers = await _peers(channels)
        # The peer is the client's address and port: one per TCP connection.
        assert len(peers) == (5 if own else 1)
    finally:
        for channel in channels:
            await channel.close()
        await server.stop(None)
