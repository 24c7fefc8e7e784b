"""``grpc.aio`` channels with EDDL's message limits and keepalive."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "channel_options", "open_channel"]

# Tensors travel in chunks of about 1 MiB, so the 4 MiB default is kept: a peer sending a
# bigger single message is misbehaving and gets RESOURCE_EXHAUSTED from gRPC itself.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Reconnect quickly after a leader restart instead of gRPC's default of up to 2 minutes.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
        ("grpc.enable_retries", 0),
    ]


def open_channel(
    address: str,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    server_name: str = "",
    own_connection: bool = False,
) -> grpc.aio.Channel:
    """A channel to ``address`` (host:port): mutual TLS with ``credentials`` (see
    :mod:`eddl.security.tls`), else plaintext (``--insecure`` daemons and in-process tests).
    ``server_name``: the name the server's certificate must carry, instead of the host.
    ``own_connection``: a TCP connection of the channel's own, not the one gRPC shares between
    channels to the same address (many simulated nodes in one process, each as a device)."""
    options: list[tuple[str, int | str]] = [*channel_options(max_message_bytes)]
    if own_connection:
        options.append(("grpc.use_local_subchannel_pool", 1))
    if credentials is not None:
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        return grpc.aio.secure_channel(
            address, credentials, options=options, interceptors=list(interceptors) or None
        )
    return grpc.aio.insecure_channel(
        address, options=options, interceptors=list(interceptors) or None
    )
