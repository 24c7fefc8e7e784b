"""Launchers (bounded lifetimes, clean shutdown) and the deterministic kernel timer on QEMU."""

from __future__ import annotations

import os
import socket
import sys
import time

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
from eddl.mcu.protocol import Algo, SetupSpec
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
