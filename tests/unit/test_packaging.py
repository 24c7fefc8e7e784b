"""The package list in pyproject.toml covers every package folder (leader/ -> eddl.leader...),
and the built wheel holds every firmware source (an installed EDDL builds the firmware)."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAPPED = {"leader": "eddl.leader", "worker": "eddl.worker", "profiler": "eddl.profiler"}
# Folders shipped as data only (no __init__.py): every subfolder is listed as a package.
DATA = {"firmware": "eddl.firmware"}


def _package_name(folder: Path) -> str:
    parts = folder.relative_to(ROOT).parts
    head = {**MAPPED, **DATA}.get(parts[0], parts[0])
    return ".".join([head, *parts[1:]])


def _git_files(*args: str) -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know which files are sources")
    out = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", *args],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    return sorted(name for name in out.decode().split("\0") if name)


def _has_build_backend() -> bool:
    """Whether this environment has the setuptools pyproject.toml asks for (>= 77; it builds
    wheels without the wheel package)."""
    try:
        major = int(importlib.metadata.version("setuptools").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    return major >= 77


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        _package_name(init.parent)
        for top in ("eddl", *MAPPED)
        for init in (ROOT / top).rglob("__init__.py")
    }
    for top in DATA:
        found.add(_package_name(ROOT / top))
        found |= {
            _package_name(d)
            for d in (ROOT / top).rglob("*")
            if d.is_dir() and d.relative_to(ROOT / top).parts[0] != "build"
        }
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - found == set(), "these listed packages have no folder"
    for package, folder in config["package-dir"].items():
        assert (ROOT / folder).is_dir(), package
        assert folder in DATA or (ROOT / folder / "__init__.py").exists(), package


@pytest.mark.timeout(300)
def test_the_wheel_holds_every_firmware_source_and_no_build_output(tmp_path: Path) -> None:
    """Build a wheel from a copy of the working tree (tracked and new files, as a fresh clone
    has them, plus a stray build output) and compare its eddl/firmware/ with git's list."""
    firmware = _git_files("firmware")
    tree = tmp_path / "src"
    for name in _git_files("--cached", "--others", "--exclude-standard"):
        if (ROOT / name).is_file():  # deleted but not yet staged files are skipped
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / name, tree / name)
    stray = tree / "firmware" / "build" / "host" / "eddl-mcu-sim"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"\x7fELF a build output")
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q"]
    if _has_build_backend():
        pip.append("--no-build-isolation")  # else pip fetches setuptools from the index
    out = subprocess.run(
        [*pip, "-w", str(tmp_path / "dist"), str(tree)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = (tmp_path / "dist").glob("eddl-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = sorted(n for n in zf.namelist() if n.startswith("eddl/firmware/"))
    assert shipped == sorted("eddl/" + name for name in firmware)
    assert "eddl/firmware/Makefile" in shipped and "eddl/firmware/src/device.c" in shipped
