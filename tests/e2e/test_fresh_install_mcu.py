"""The microcontroller commands after a normal (not editable) install, as a new user runs them.

A copy of the working tree (what a fresh clone holds: no ``firmware/build``) is installed with
``pip install DIR`` into a new venv; the commands then run with the clone as the working
directory, so a source ``eddl/`` there must not shadow the installed package, and the firmware
is built from the sources shipped in the package, in a cache folder of the test's own
(``XDG_CACHE_HOME``), never in the clone.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from eddl.mcu.launch import qemu_available

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Install:
    clone: Path
    eddl: Path
    env: dict[str, str]
    cache: Path


def _copy_clone(dest: Path) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to copy as a fresh clone")
    names = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    for name in filter(None, names.split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / name, dest / name)


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Install:
    if shutil.which("make") is None or shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("SKIPPED LOUDLY: make and a C compiler are needed to build the simulator")
    base = tmp_path_factory.mktemp("fresh")
    clone, venv = base / "clone", base / "venv"
    _copy_clone(clone)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(clone)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["XDG_CACHE_HOME"] = str(base / "cache")
    return Install(clone, venv / "bin" / "eddl", env, base / "cache")


@contextlib.contextmanager
def _started(argv: list[str], install: Install) -> Iterator[subprocess.Popen[str]]:
    """A process in a session of its own; it and everything it started are killed by PID."""
    proc = subprocess.Popen(
        argv,
        cwd=install.clone,
        env=install.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            family = [*psutil.Process(proc.pid).children(recursive=True)]
            for child in family:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
            psutil.wait_procs(family, timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its group: the session it leads
        proc.communicate(timeout=10)


def _built_simulators(cache: Path) -> list[Path]:
    return sorted(cache.glob("eddl/firmware/*/build/host/eddl-mcu-sim"))


def _url(proc: subprocess.Popen[str], what: str) -> str:
    """The URL ``eddl mcu sim|qemu`` prints first; the first run builds, so wait long."""
    assert proc.stdout is not None
    deadline = time.monotonic() + 240.0
    ready: list[object] = []
    while not ready and proc.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
    assert ready, f"{what} printed no URL (exit {proc.poll()})"
    url = proc.stdout.readline().strip()
    if not url.startswith("socket://127.0.0.1:"):
        proc.wait(20)
        pytest.fail(f"{what} printed {url!r}: {proc.stderr.read() if proc.stderr else ''}")
    return url


def _info(install: Install, url: str) -> dict[str, object]:
    info = subprocess.run(
        [str(install.eddl), "mcu", "info", url, "--json"],
        cwd=install.clone,
        env=install.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert info.returncode == 0, info.stderr
    answer: dict[str, object] = json.loads(info.stdout)
    return answer


def test_eddl_mcu_sim_builds_from_the_installed_package_and_answers(install: Install) -> None:
    with _started([str(install.eddl), "mcu", "sim", "--lifetime", "300"], install) as sim:
        url = _url(sim, "eddl mcu sim")
        assert _info(install, url)["board"] == "host-sim"
        sim.send_signal(signal.SIGINT)
        assert sim.wait(20) == 0
    assert len(_built_simulators(install.cache)) == 1
    assert not (install.clone / "firmware" / "build").exists()


@pytest.mark.qemu
def test_eddl_mcu_qemu_builds_its_image_from_the_installed_package(install: Install) -> None:
    if not qemu_available():
        pytest.skip("SKIPPED LOUDLY: qemu-system-arm / arm-none-eabi-gcc not installed")
    with _started([str(install.eddl), "mcu", "qemu", "--lifetime", "300"], install) as qemu:
        url = _url(qemu, "eddl mcu qemu")
        assert _info(install, url)["board"] == "arduino-due"
        qemu.send_signal(signal.SIGINT)
        assert qemu.wait(20) == 0
    assert len(list(install.cache.glob("eddl/firmware/*/build/due-all/eddl-fw.elf"))) == 1
    assert not (install.clone / "firmware" / "build").exists()


def test_eddl_local_with_two_mcus_completes_from_the_installed_package(install: Install) -> None:
    argv = [str(install.eddl), "local", "--workers", "2", "--mcu", "2", "--json"]
    with _started(argv, install) as local:
        try:
            out, err = local.communicate(timeout=480)
        except subprocess.TimeoutExpired:
            pytest.fail("eddl local --mcu 2 did not finish in 480 s")
        assert local.returncode == 0, err[-3000:]
    result = json.loads(out)
    assert result["state"] == "completed" and result["mcus"] == 2, result
    assert result["accuracy"] is not None
    assert len(_built_simulators(install.cache)) == 1
    assert not (install.clone / "firmware" / "build").exists()
