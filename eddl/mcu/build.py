"""Firmware builds: where the C sources are, where they are built, and which tools that needs.

The sources ship inside the package (``eddl/firmware``: the Makefile, ``src/``, ``host/``,
``mps2/``), so an installed EDDL builds the host simulator and the QEMU images wherever the
compilers exist. Two places to build:

* **Source checkout** (``firmware/`` next to ``pyproject.toml``, editable installs included):
  ``make`` runs in ``firmware/`` itself, as ``make -C firmware`` does by hand, so an edited
  source is rebuilt by make's own dependency rules and the outputs are the documented
  ``firmware/build/...`` paths.
* **Installed package** (or a read-only checkout): site-packages may belong to root, and files
  written there outlive ``pip uninstall``. The sources are copied to a per-user cache,
  ``$XDG_CACHE_HOME/eddl/firmware/<digest>/`` (``~/.cache`` without it), named by a digest of
  their contents, and built there: another EDDL version gets another folder, and a folder's
  outputs, once built, never go stale. Old folders can be deleted at any time.

Every build holds an exclusive ``fcntl.flock`` on a lock file beside the build, so two
launches at once (``eddl local --mcu 2``, two ``eddl mcu sim``) do not run make over each other.
A missing compiler or tool is reported before make runs, with the Debian package that has it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from eddl.log import get_logger

__all__ = [
    "ARM_TOOLS",
    "QEMU_TOOLS",
    "TOOL_PACKAGES",
    "FirmwareError",
    "FirmwareTree",
    "build_firmware",
    "build_output",
    "cache_root",
    "firmware_dir",
    "firmware_tree",
    "host_tools",
    "locate_sources",
    "prepare_tree",
    "require_tools",
    "source_digest",
]

log = get_logger("mcu.build")

# The Debian (and Ubuntu, Raspberry Pi OS) packages that provide each tool. cc and gcc need
# libc6-dev for the C library headers; the ARM link needs newlib (--specs=nano.specs).
TOOL_PACKAGES: dict[str, tuple[str, ...]] = {
    "cc": ("gcc", "libc6-dev"),
    "gcc": ("gcc", "libc6-dev"),
    "make": ("make",),
    "arm-none-eabi-gcc": ("gcc-arm-none-eabi", "libnewlib-arm-none-eabi"),
    "arm-none-eabi-cpp": ("gcc-arm-none-eabi",),
    "arm-none-eabi-size": ("binutils-arm-none-eabi",),
    "qemu-system-arm": ("qemu-system-arm",),
}
ARM_TOOLS = ("make", "arm-none-eabi-gcc", "arm-none-eabi-cpp")
QEMU_TOOLS = ("qemu-system-arm",)

# What make's output says when a package is installed only in part (the compiler without the
# C library headers, the ARM compiler without newlib), and which package fixes it.
_OUTPUT_HINTS = (
    ("nano.specs", "libnewlib-arm-none-eabi"),
    ("stdio.h: No such file", "libc6-dev"),
    ("math.h: No such file", "libc6-dev"),
    ("cannot find crt1.o", "libc6-dev"),
)


class FirmwareError(RuntimeError):
    """The firmware cannot be built or a device process cannot be started."""


def host_tools() -> tuple[str, ...]:
    """The tools ``make host`` runs: make and the C compiler (``$CC``, as the Makefile reads)."""
    cc = shlex.split(os.environ.get("CC", "")) or ["cc"]
    return ("make", cc[0])


def require_tools(tools: Iterable[str], path: str | None = None) -> None:
    """Raise :class:`FirmwareError` naming every tool not on ``path`` (default ``$PATH``) and
    the Debian packages that provide them."""
    missing = [t for t in dict.fromkeys(tools) if shutil.which(t, path=path) is None]
    if not missing:
        return
    packages = [p for t in missing for p in TOOL_PACKAGES.get(t, ())]
    unknown = [t for t in missing if t not in TOOL_PACKAGES]
    hint = ""
    if packages:
        hint = f"; on Debian or Ubuntu: sudo apt install {' '.join(dict.fromkeys(packages))}"
    if unknown:
        hint += f"; install {', '.join(unknown)} or put it on PATH"
    raise FirmwareError(f"not installed (not on PATH): {', '.join(missing)}{hint}")


def _tools_for(targets: Sequence[str], make_vars: Mapping[str, str]) -> tuple[str, ...]:
    tools: tuple[str, ...] = ("make",)
    if {"host", "all"} & set(targets):
        tools += host_tools()
    if {"qemu", "image", "size", "size-one", "all"} & set(targets):
        tools += (make_vars.get("ARM_CC", ARM_TOOLS[1]), make_vars.get("ARM_CPP", ARM_TOOLS[2]))
    if {"size", "size-one"} & set(targets):
        tools += (make_vars.get("ARM_SIZE", "arm-none-eabi-size"),)
    return tools


def _output_hint(output: str) -> str:
    packages = [pkg for needle, pkg in _OUTPUT_HINTS if needle in output]
    if not packages:
        return ""
    return f"\n(on Debian or Ubuntu: sudo apt install {' '.join(dict.fromkeys(packages))})"


@dataclass(frozen=True)
class FirmwareTree:
    """Where make runs (``workdir``) and the lock that serialises builds there."""

    sources: Path
    workdir: Path
    lock: Path
    cached: bool  # True: workdir is a copy in the per-user cache, named by the sources' digest


def _is_sources(path: Path) -> bool:
    return (path / "Makefile").is_file() and (path / "src").is_dir()


def locate_sources() -> tuple[Path, bool]:
    """The firmware sources and whether they are the installed package's (not a checkout's)."""
    package = Path(__file__).resolve().parents[1] / "firmware"
    if _is_sources(package):
        return package, True
    root = Path(__file__).resolve().parents[2]
    checkout = root / "firmware"
    if _is_sources(checkout) and (root / "pyproject.toml").is_file():
        return checkout, False
    raise FirmwareError(
        f"no firmware sources in {package} (installed) or {checkout} (checkout); "
        "reinstall EDDL: its package ships them"
    )


def _source_files(root: Path) -> list[Path]:
    """The source files under ``root``, relative, without build outputs."""
    files = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if rel.parts[0] == "build" or "__pycache__" in rel.parts or not path.is_file():
            continue
        files.append(rel)
    return sorted(files)


def source_digest(root: Path) -> str:
    """A digest of every source file's path and contents (16 hex digits)."""
    h = hashlib.sha256()
    for rel in _source_files(root):
        data = (root / rel).read_bytes()
        h.update(f"{rel.as_posix()}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:16]


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/eddl/firmware``, or ``~/.cache/eddl/firmware``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the XDG spec ignores relative paths
        return Path(xdg) / "eddl" / "firmware"
    try:
        return Path.home() / ".cache" / "eddl" / "firmware"
    except RuntimeError as exc:
        raise FirmwareError(
            f"no cache folder for firmware builds: {exc}; set XDG_CACHE_HOME"
        ) from exc


@contextlib.contextmanager
def _locked(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if needed), waiting at most ``timeout``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = path.open("a")
    except OSError as exc:
        raise FirmwareError(f"cannot create the build lock {path}: {exc}") from exc
    with fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise FirmwareError(
                        f"another firmware build held {path} for more than {timeout:.0f} s"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _copy_sources(sources: Path, dest: Path) -> None:
    """Copy the sources to ``dest`` through a scratch folder, so ``dest`` is whole or absent."""
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for rel in _source_files(sources):
        (partial / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources / rel, partial / rel)
    partial.rename(dest)


def prepare_tree(
    sources: Path, *, cached: bool, cache: Path | None = None, timeout: float = 60.0
) -> FirmwareTree:
    """The build tree for ``sources``: the sources themselves, or (``cached``) their copy in
    ``cache`` (default :func:`cache_root`) under their digest, made if missing."""
    if not cached:
        return FirmwareTree(sources, sources, sources / "build" / ".lock", cached=False)
    digest = source_digest(sources)
    base = cache or cache_root()
    tree = FirmwareTree(sources, base / digest, base / f"{digest}.lock", cached=True)
    if not tree.workdir.is_dir():  # made by one rename, so present means complete
        with _locked(tree.lock, timeout):
            if not tree.workdir.is_dir():
                try:
                    _copy_sources(sources, tree.workdir)
                except OSError as exc:
                    raise FirmwareError(f"cannot copy the firmware to {base}: {exc}") from exc
    return tree


def firmware_tree() -> FirmwareTree:
    """This EDDL's build tree: the checkout's ``firmware/``, or a cached copy when the sources
    are the installed package's or cannot be written."""
    sources, installed = locate_sources()
    return prepare_tree(sources, cached=installed or not os.access(sources, os.W_OK))


def firmware_dir() -> Path:
    """The folder make runs in (``make -C firmware_dir() TARGET``)."""
    return firmware_tree().workdir


def _make(
    tree: FirmwareTree, targets: Sequence[str], make_vars: Mapping[str, str], timeout: float
) -> None:
    require_tools(_tools_for(targets, make_vars))
    cmd = ["make", "-s", "-C", str(tree.workdir), *targets]
    cmd += [f"{k}={v}" for k, v in make_vars.items()]
    log.info("building firmware", targets=list(targets), workdir=str(tree.workdir))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FirmwareError(f"{' '.join(cmd)} failed: {exc}") from exc
    if proc.returncode != 0:
        out = f"{proc.stdout}\n{proc.stderr}"
        raise FirmwareError(f"{' '.join(cmd)} failed:\n{out.strip()}{_output_hint(out)}")


def build_firmware(*targets: str, timeout: float = 300.0, **make_vars: str) -> None:
    """Run ``make TARGETS VAR=value...`` in the build tree, locked, with a hard timeout."""
    tree = firmware_tree()
    with _locked(tree.lock, timeout + 60.0):
        _make(tree, targets, make_vars, timeout)


def build_output(
    rel: Path,
    targets: Sequence[str],
    make_vars: Mapping[str, str] | None = None,
    *,
    tree: FirmwareTree | None = None,
    timeout: float = 300.0,
) -> Path:
    """Build ``targets`` and return the output ``rel`` (relative to the build tree).

    In a cached tree an output already built is returned as is, without make or compilers: its
    sources cannot have changed (the folder is named by their digest). In a checkout make runs
    every time and rebuilds what an edit made stale.
    """
    tree = tree or firmware_tree()
    out = tree.workdir / rel
    stamp = out.with_name(out.name + ".built")  # written only after make succeeded
    with _locked(tree.lock, timeout + 60.0):
        if tree.cached and out.is_file() and stamp.is_file():
            return out
        _make(tree, targets, make_vars or {}, timeout)
        if not out.is_file():
            raise FirmwareError(f"make {' '.join(targets)} in {tree.workdir} did not build {out}")
        if tree.cached:
            stamp.touch()
    return out
