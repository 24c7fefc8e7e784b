"""Launchers (bounded lifetimes, clean shutdown) and the deterministic kernel timer on QEMU."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from eddl.mcu.driver import Device
from eddl.mcu.launch import (
    FirmwareError,
    Launched,
    _listening,
    qemu_image,
    start_qemu,
    start_sim,
)
from eddl.mcu.protocol import TENSOR_X, Algo, SetupSpec
from eddl.mcu.session import DeviceModel


def test_simulator_is_killed_when_its_lifetime_ends(sim_exe: object) -> None:
    launched = start_sim("tcp", lifetime=0.5)
    try:
        deadline = time.monotonic() + 10
        while launched.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not launched.alive
    finally:
        launched.close()


def test_close_terminates_a_running_simulator(sim_exe: object) -> None:
    with start_sim("tcp", lifetime=60) as launched:
        with Device.open(launched.url) as dev:
            assert dev.info is not None
        proc = launched.proc
    assert proc.poll() is not None


def test_unknown_board_and_transport_are_refused(sim_exe: object) -> None:
    with pytest.raises(FirmwareError):
        qemu_image("arduino-uno", build=False)
    with pytest.raises(FirmwareError):
        start_sim("carrier-pigeon")


@pytest.mark.qemu
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_listening_check_sees_only_the_processs_own_listener(sim: Launched) -> None:
    """QEMU's port is found listening without connecting to it, and only in QEMU's process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert _listening(os.getpid(), port) is False  # bound, not listening
        s.listen(1)
        assert _listening(os.getpid(), port) is True
        assert _listening(sim.proc.pid, port) is False  # someone else's listener
    sim_port = int(sim.url.rsplit(":", 1)[1])
    assert _listening(sim.proc.pid, sim_port) is True
    assert _listening(os.getpid(), sim_port) is False


def test_qemu_board_reports_its_size(qemu_elf: object) -> None:
    with start_qemu("due", lifetime=60) as launched, Device.open(launched.url) as dev:
        assert dev.info is not None
        assert (dev.info.ram_bytes, dev.info.flash_bytes) == (98304, 524288)
        assert dev.info.board == "arduino-due" and dev.info.tick_hz == 25_000_000
    assert launched.proc.poll() is not None


@pytest.mark.qemu
def test_qemu_kernel_ticks_are_deterministic(qemu: Launched) -> None:
    """Under -icount shift=0 the same TRAIN takes the same number of timer ticks every time, up
    to the one-tick quantisation of where the start falls within a 40-instruction tick."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, size=(10, 32)).astype(np.uint8)
    y = rng.integers(0, 4, size=10)
    ticks = []
    with Device.open(qemu.url, timeout=5.0) as dev:
        for _ in range(3):
            model = DeviceModel(dev, SetupSpec(Algo.TIFED, (32, 8, 4), capacity=10, max_batch=5))
            model.load_samples(x, y)
            before = dev.stats()
            samples, t = dev.train(10, batch=5, epochs=2, lr_inv=2048)
            after = dev.stats()
            assert samples == 20 and t > 0
            assert after.kernel_ticks - before.kernel_ticks == t == after.last_train_ticks
            ticks.append(t)
    assert max(ticks) - min(ticks) <= 1, ticks


def _boundary_blob() -> bytes:
    """Zero runs and zero-free runs on both sides of COBS's 254-byte group limit."""
    runs = [b"\x00" * 3, bytes(range(1, 255)), b"\x00", bytes(range(1, 256)), b"\x09" * 508]
    runs += [b"\x00" * 300, b"\x07" * 253, b"\x00", b"\x05" * 509, b"\x00" * 2]
    blob = b"".join(runs) * 40
    return blob[: len(blob) - len(blob) % 100]


@pytest.mark.parametrize("transport", ["tcp", "pty"])
def test_frames_at_cobs_group_boundaries_cross_the_simulator_intact(
    sim_exe: object, transport: str
) -> None:
    """The simulator's C COBS and CRC decode what the driver encodes and the other way round,
    for the byte patterns where encoders differ if one is wrong."""
    blob = _boundary_blob()
    with start_sim(transport, lifetime=60) as launched, Device.open(launched.url) as dev:
        dev.setup(SetupSpec(Algo.TIFED, (len(blob) // 100, 2, 2), 100))
        dev.load(TENSOR_X, blob)
        assert dev.read(TENSOR_X, len(blob)) == blob
        dev.load(TENSOR_X, blob[::-1])
        assert dev.read(TENSOR_X, len(blob)) == blob[::-1]
        assert dev.link.bad_frames == 0 and dev.link.retransmits == 0


@pytest.mark.parametrize("transport", ["tcp", "pty"])
def test_paced_simulator_moves_about_baud_over_ten_bytes_per_second(
    sim_exe: object, transport: str
) -> None:
    """``--baud`` paces both directions like a UART at 8N1: never faster than baud/10 bytes a
    second (an unpaced link is thousands of times faster, 8 bits a byte would be 1.25x). Only
    that bound is checked: how close a busy machine gets to the line rate is a benchmark's
    question (bench/mcu.py), not a test's."""
    baud = 230_400
    nbytes = 11_500  # half a second each way at 23,040 bytes/s
    blob = np.random.default_rng(1).integers(0, 256, nbytes).astype(np.uint8).tobytes()
    with (
        start_sim(transport, lifetime=60, baud=baud) as launched,
        Device.open(launched.url, timeout=5.0) as dev,
    ):
        up = nbytes / dev.linktest_upload(nbytes)
        down = nbytes / dev.linktest_download(nbytes)
        for rate in (up, down):
            assert rate < baud / 10 * 1.15, (up, down)
        dev.setup(SetupSpec(Algo.TIFED, (nbytes // 100, 2, 2), 100))
        start = time.monotonic()
        dev.load(TENSOR_X, blob)
        assert dev.read(TENSOR_X, nbytes) == blob
        assert time.monotonic() - start > 2 * nbytes / (baud / 10) / 1.15


def test_bad_baud_rates_are_refused(sim_exe: Path) -> None:
    for baud in (0, 49, 100_000_001):
        with pytest.raises(ValueError):
            start_sim("tcp", baud=baud)
    for arg in ("10", "9600x", ""):
        out = subprocess.run(
            [str(sim_exe), "--baud", arg], capture_output=True, timeout=10, check=False
        )
        assert out.returncode == 2 and b"baud" in out.stderr
    cli = subprocess.run(
        [sys.executable, "-m", "eddl.cli", "mcu", "sim", "--baud", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 2 and "--baud" in cli.stderr


def test_eddl_mcu_sim_serves_a_paced_link(sim_exe: object) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "eddl.cli", "mcu", "sim", "--baud", "1000000", "--lifetime", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20.0)
        assert ready, "eddl mcu sim printed no URL"
        url = proc.stdout.readline().strip()
        with Device.open(url, timeout=5.0) as dev:
            rate = 20_000 / dev.linktest_download(20_000)
        assert 100_000 / 2 < rate < 100_000 * 2
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
