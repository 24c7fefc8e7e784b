"""Fixtures for the firmware tests: built images, a host simulator, a QEMU board.

Every device process has a bounded lifetime and is closed in a finally (the launchers' context
managers); QEMU tests are marked ``qemu`` and skip loudly when the toolchain is missing.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from eddl.mcu.framing import Frame, FrameReader, decode_frame, encode_frame
from eddl.mcu.launch import (
    Launched,
    build_firmware,
    qemu_available,
    qemu_image,
    sim_binary,
    start_qemu,
    start_sim,
)


@pytest.fixture(scope="session")
def sim_exe() -> object:
    return sim_binary(build=True)


@pytest.fixture
def sim(sim_exe: object) -> Iterator[Launched]:
    with start_sim("tcp", lifetime=120.0) as launched:
        yield launched


ALL_BOARDS = [
    "host",
    *(pytest.param(b, marks=pytest.mark.qemu) for b in ("due", "an386", "an500")),
]


@pytest.fixture(scope="module", params=ALL_BOARDS)
def board(request: pytest.FixtureRequest) -> Iterator[Launched]:
    """Each test that takes it runs on the host simulator and under QEMU on the Cortex-M3
    (AN385), the Cortex-M4F (AN386) and the Cortex-M7 (AN500) images."""
    name = request.param
    if name == "host":
        with start_sim("tcp", lifetime=300.0) as launched:
            yield launched
        return
    if not qemu_available():
        pytest.skip("SKIPPED LOUDLY: qemu-system-arm / arm-none-eabi-gcc not installed")
    build_firmware("qemu", "fpu", timeout=600)
    with start_qemu(name, lifetime=300.0) as launched:
        yield launched


@pytest.fixture(scope="session")
def qemu_elf() -> object:
    if not qemu_available():
        pytest.skip("SKIPPED LOUDLY: qemu-system-arm / arm-none-eabi-gcc not installed")
    build_firmware("qemu")
    return qemu_image("due", build=False)


@pytest.fixture(scope="session")
def qemu(qemu_elf: object) -> Iterator[Launched]:
    """One emulated Arduino-Due-sized board shared by the QEMU tests (each does its own SETUP)."""
    with start_qemu("due", lifetime=400.0) as launched:
        yield launched


class RawLink:
    """A bare TCP client that speaks frames by hand, to send what the driver never would."""

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("socket://").partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=5.0)
        self.reader = FrameReader(1 << 17)
        self.pending: list[bytes | None] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self, type_: int, seq: int, payload: bytes = b"", version: int = 1) -> None:
        self.send(b"\x00" + encode_frame(version, type_, seq, payload))

    def recv(self, timeout: float = 5.0) -> Frame:
        """The next frame from the device (AssertionError if none comes in ``timeout``)."""
        deadline = time.monotonic() + timeout
        while not self.pending and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            self.pending += self.reader.feed(data)
        if not self.pending:
            raise AssertionError("no frame from the device")
        encoded = self.pending.pop(0)
        assert encoded is not None
        return decode_frame(encoded)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(sim: Launched) -> Iterator[RawLink]:
    link = RawLink(sim.url)
    try:
        yield link
    finally:
        link.close()
