"""Start devices: the host simulator (TCP or pty) and QEMU MPS2 boards, built first if needed.

Builds (where the sources are, where they are built, which tools) live in :mod:`eddl.mcu.build`;
``build_firmware``, ``firmware_dir`` and ``FirmwareError`` are re-exported here.

Every started process has a bounded lifetime (a watchdog kills it) and :meth:`Launched.close`
terminates it, then kills it if it lingers; use the launchers as context managers. On Linux it
is also started bound to this process (``PR_SET_PDEATHSIG``, see :mod:`eddl.childproc`): it
dies when this process dies, even by SIGKILL, or when the thread that started it ends, so call
the launchers from a thread that lives as long as the device should (the main thread).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import threading
import time
import tty
from pathlib import Path
from types import TracebackType

from eddl.childproc import bound_to_parent
from eddl.log import get_logger
from eddl.mcu.build import (
    ARM_TOOLS,
    QEMU_TOOLS,
    FirmwareError,
    build_firmware,
    build_output,
    firmware_dir,
    require_tools,
)

__all__ = [
    "BOARDS",
    "MACHINES",
    "SIM_BAUD_RANGE",
    "FirmwareError",
    "Launched",
    "build_firmware",
    "firmware_dir",
    "qemu_available",
    "qemu_image",
    "qemu_machine",
    "sim_binary",
    "start_qemu",
    "start_sim",
]

log = get_logger("mcu.launch")

# Board name (make BOARD=...) -> description. `make -C firmware qemu` builds due and mps2,
# `make -C firmware fpu` an386 and an500.
BOARDS = {
    "due": "Arduino Due (SAM3X8E Cortex-M3): 512 KB flash, 96 KB SRAM",
    "mps2": "Arm MPS2 with AN385 (Cortex-M3): 4 MB code SSRAM, 4 MB data SSRAM",
    "an386": "Arm MPS2 with AN386 (Cortex-M4F, hardware float): 4 MB code SSRAM, 4 MB data SSRAM",
    "an500": "Arm MPS2 with AN500 (Cortex-M7, hardware float): 4 MB code SSRAM, 4 MB data SSRAM",
    "ram64": "a Cortex-M3 with 64 KB RAM (size studies)",
    "ram256": "a Cortex-M3 with 256 KB RAM (size studies)",
}

# The QEMU machine each board's image boots in: the three MPS2 images share the memory map
# (code at 0x0, data at 0x20000000, CMSDK UART0 at 0x40004000 and TIMER0 at 0x40000000), so the
# Cortex-M3 sizes all run on the AN385 and only the CPU differs.
MACHINES = {"an386": "mps2-an386", "an500": "mps2-an500"}


def qemu_machine(board: str) -> str:
    """The ``qemu-system-arm -M`` machine of ``board`` (mps2-an385 unless it has an FPU)."""
    if board not in BOARDS:
        raise FirmwareError(f"unknown board {board!r}; known: {', '.join(BOARDS)}")
    return MACHINES.get(board, "mps2-an385")


def sim_binary(build: bool = True) -> Path:
    """The host simulator, built first (``make host``) unless ``build`` is false."""
    rel = Path("build", "host", "eddl-mcu-sim")
    if build:
        return build_output(rel, ("host",))
    path = firmware_dir() / rel
    if not path.is_file():
        raise FirmwareError(f"{path} missing; run make -C {path.parents[2]} host")
    return path


def qemu_image(board: str = "due", kernels: str = "all", build: bool = True) -> Path:
    """The firmware image for ``board``, built first (``make image``) unless ``build`` is false."""
    if board not in BOARDS:
        raise FirmwareError(f"unknown board {board!r}; known: {', '.join(BOARDS)}")
    rel = Path("build", f"{board}-{kernels}", "eddl-fw.elf")
    if build:
        return build_output(rel, ("image",), {"BOARD": board, "KERNELS": kernels})
    path = firmware_dir() / rel
    if not path.is_file():
        raise FirmwareError(f"{path} missing; run make -C {path.parents[2]} qemu")
    return path


def qemu_available() -> bool:
    """Whether the tools to build the images and run QEMU are on PATH."""
    return all(shutil.which(t) for t in (*QEMU_TOOLS, *ARM_TOOLS))


class Launched:
    """A running device process and the pyserial URL that reaches it."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        url: str,
        lifetime: float,
        keep_fds: tuple[int, ...] = (),
    ) -> None:
        self.proc = proc
        self.url = url
        self._keep_fds = keep_fds
        self._watchdog = threading.Timer(lifetime, self._expire)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _expire(self) -> None:
        log.warning("device lifetime over, killing", pid=self.proc.pid, url=self.url)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, grace: float = 3.0) -> None:
        self._watchdog.cancel()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(grace)
        for fd in self._keep_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._keep_fds = ()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> Launched:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 256)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace").strip()


# The simulator's --baud range: from the slowest rate a UART is set to up to 100 Mbaud.
SIM_BAUD_RANGE = (50, 100_000_000)


def start_sim(
    transport: str = "tcp",
    *,
    lifetime: float = 600.0,
    binary: Path | None = None,
    port: int = 0,
    baud: int | None = None,
) -> Launched:
    """Start the host simulator; ``transport`` is ``"tcp"`` (127.0.0.1) or ``"pty"``.

    With ``baud``, the simulator paces its link like a UART at that rate with 8N1 framing (10
    bits per byte): it sends ``baud / 10`` bytes/s and takes in at most as many, so transfer
    times look like a real serial line's. Without it, the link runs as fast as the transport.
    """
    if baud is not None and not SIM_BAUD_RANGE[0] <= baud <= SIM_BAUD_RANGE[1]:
        raise ValueError(f"baud must be in {SIM_BAUD_RANGE[0]}..{SIM_BAUD_RANGE[1]}, got {baud}")
    if transport not in ("tcp", "pty"):
        raise FirmwareError(f"unknown transport {transport!r}: tcp or pty")
    exe = str(binary or sim_binary())
    pacing = [] if baud is None else ["--baud", str(baud)]
    if transport == "tcp":
        proc = subprocess.Popen(
            bound_to_parent([exe, "--tcp", str(port), *pacing]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        line = _read_line(proc, 10.0)
        if not line.startswith("LISTENING "):
            proc.kill()
            proc.wait(5)
            raise FirmwareError(f"simulator did not start: {line!r}")
        return Launched(proc, f"socket://127.0.0.1:{int(line.split()[1])}", lifetime)
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        proc = subprocess.Popen(
            bound_to_parent([exe, *pacing]),
            stdin=master,
            stdout=master,
            stderr=subprocess.DEVNULL,
        )
    finally:
        os.close(master)
    # Our slave fd keeps the pty open until close(); the driver opens it again by name.
    return Launched(proc, os.ttyname(slave), lifetime, keep_fds=(slave,))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _listening(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` listens on TCP ``port``, read from /proc without connecting;
    None where /proc does not tell (not Linux).

    A probe connection is not harmless to QEMU: right after it, the first frames of the real
    client were unanswered in 2 of 12 fresh starts (about 1 s of HELLO retries); with this
    check none were in 38.
    """
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
        table = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    inodes = set()
    for fd in fds:
        with contextlib.suppress(OSError):
            target = str(fd.readlink())
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    want = f":{port:04X}"
    for line in table:
        f = line.split()  # sl, local address, remote address, state, ..., inode (field 9)
        if len(f) > 9 and f[1].endswith(want) and f[3] == "0A" and f[9] in inodes:
            return True
    return False


def start_qemu(
    board: str = "due",
    *,
    kernels: str = "all",
    lifetime: float = 600.0,
    image: Path | None = None,
    attempts: int = 5,
    port: int = 0,
) -> Launched:
    """Boot the firmware in ``qemu-system-arm -M <machine> -icount shift=0`` on a TCP serial;
    the machine is the board's (:func:`qemu_machine`), ``mps2-an385`` for a Cortex-M3 board.

    With ``port`` 0 the port is chosen by binding port 0, and if QEMU loses the race for it,
    another is tried; a given ``port`` (a board restarted where its gateway looks for it) is
    tried ``attempts`` times.
    """
    require_tools(QEMU_TOOLS)
    machine = qemu_machine(board)
    elf = str(image or qemu_image(board, kernels))
    last = ""
    fixed = port
    for _ in range(attempts):
        port = fixed or _free_port()
        cmd = [
            "qemu-system-arm",
            "-M",
            machine,
            "-nographic",
            "-monitor",
            "none",
            "-icount",
            "shift=0",
            "-kernel",
            elf,
            "-semihosting-config",
            "enable=on,target=native",
            "-serial",
            f"tcp:127.0.0.1:{port},server=on,wait=off,nodelay=on",
        ]
        proc = subprocess.Popen(
            bound_to_parent(cmd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline and proc.poll() is None:
            listening = _listening(proc.pid, port)
            if listening is None:  # QEMU serves the probe, then listens again
                listening = _port_open(port)
            if listening:
                return Launched(proc, f"socket://127.0.0.1:{port}", lifetime)
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        last = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        proc.stderr and proc.stderr.close()
        log.info("qemu start failed, retrying", port=port, stderr=last.strip()[:200])
    raise FirmwareError(f"QEMU did not start after {attempts} attempts: {last.strip()}")
