"""A byte-for-byte TCP forwarder: ``python -m bench.tcpfwd LISTEN_HOST:PORT TARGET_PORT``.

Benchmark plumbing only: an ``--insecure`` leader binds loopback, so a leader inside a network
namespace is reached over the namespace's veth address through this forwarder, which runs in
the same namespace and relays every connection to ``127.0.0.1:TARGET_PORT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence

__all__ = ["main"]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(host: str, port: int, target: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, host, port)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m bench.tcpfwd LISTEN_HOST:PORT TARGET_PORT", file=sys.stderr)
        return 2
    host, _, port = args[0].rpartition(":")
    asyncio.run(_serve(host, int(port), int(args[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
