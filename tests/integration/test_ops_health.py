"""`eddl health` against a real gRPC server: SERVING, NOT_SERVING, nobody there, bad input."""

from __future__ import annotations

import asyncio

import pytest

from eddl.cli import main as eddl_main
from eddl.net import start_server
from eddl.ops.health import check_health


async def test_health_follows_the_servers_status(capsys: pytest.CaptureFixture[str]) -> None:
    server = await start_server("127.0.0.1:0", [], ["eddl.v1.Probe"])
    try:
        result = await check_health(server.address)
        assert result.serving and result.status == "SERVING"
        code = await asyncio.to_thread(eddl_main, ["health", server.address])
        assert code == 0 and "SERVING" in capsys.readouterr().out
        await server.set_serving(False)
        assert (await check_health(server.address, "eddl.v1.Probe")).status == "NOT_SERVING"
        assert await asyncio.to_thread(eddl_main, ["health", "-q", server.address]) == 1
        unknown = await check_health(server.address, "no.Such")
        assert unknown.status == "SERVICE_UNKNOWN" and not unknown.serving
        address = server.address
    finally:
        await server.stop(0)
    gone = await check_health(address, timeout_s=2)
    assert gone.status == "UNREACHABLE" and "UNAVAILABLE" in gone.detail


def test_bad_address_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert eddl_main(["health", "no-port"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err
