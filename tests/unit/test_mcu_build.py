"""Firmware builds without a compiler: tool checks (on a PATH of our own), the cache, the lock."""

from __future__ import annotations

import fcntl
import shutil
from pathlib import Path

import pytest

from eddl.mcu.build import (
    ARM_TOOLS,
    QEMU_TOOLS,
    FirmwareError,
    _locked,
    _output_hint,
    _tools_for,
    host_tools,
    locate_sources,
    prepare_tree,
    require_tools,
    source_digest,
)

ROOT = Path(__file__).resolve().parents[2]


def _bin_dir(tmp_path: Path, *tools: str) -> str:
    """A PATH of one folder holding an executable stub per tool (never run, only found)."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for tool in tools:
        stub = folder / tool
        stub.write_text("#!/bin/sh\nexit 1\n")
        stub.chmod(0o755)
    return str(folder)


def _copy_of_sources(tmp_path: Path) -> Path:
    dest = tmp_path / "pkg" / "firmware"
    shutil.copytree(ROOT / "firmware", dest, ignore=shutil.ignore_patterns("build"))
    return dest


def test_a_missing_c_compiler_names_gcc_and_libc6_dev(tmp_path: Path) -> None:
    with pytest.raises(FirmwareError) as err:
        require_tools(("make", "cc"), path=_bin_dir(tmp_path, "make"))
    text = str(err.value)
    assert text == (
        "not installed (not on PATH): cc; on Debian or Ubuntu: sudo apt install gcc libc6-dev"
    )


def test_every_missing_tool_and_its_package_are_named_once(tmp_path: Path) -> None:
    empty = _bin_dir(tmp_path)
    with pytest.raises(FirmwareError) as err:
        require_tools(("make", "make", "gcc", *ARM_TOOLS, *QEMU_TOOLS), path=empty)
    text = str(err.value)
    assert "make, gcc, arm-none-eabi-gcc, arm-none-eabi-cpp, qemu-system-arm" in text
    packages = text.split("sudo apt install ")[1].split()
    assert packages == [
        "make",
        "gcc",
        "libc6-dev",
        "gcc-arm-none-eabi",
        "libnewlib-arm-none-eabi",
        "qemu-system-arm",
    ]


def test_qemu_alone_names_its_package(tmp_path: Path) -> None:
    with pytest.raises(FirmwareError, match=r"qemu-system-arm.*apt install qemu-system-arm$"):
        require_tools(QEMU_TOOLS, path=_bin_dir(tmp_path))


def test_a_tool_present_and_executable_passes_and_a_plain_file_does_not(tmp_path: Path) -> None:
    path = _bin_dir(tmp_path, "make", "cc", "arm-none-eabi-gcc", "arm-none-eabi-cpp")
    require_tools(("make", "cc", *ARM_TOOLS), path=path)
    (tmp_path / "bin" / "qemu-system-arm").write_text("not executable")
    with pytest.raises(FirmwareError, match="qemu-system-arm"):
        require_tools(QEMU_TOOLS, path=path)


def test_an_unknown_compiler_is_named_without_a_package(tmp_path: Path) -> None:
    with pytest.raises(FirmwareError) as err:
        require_tools(("make", "my-cc"), path=_bin_dir(tmp_path))
    assert "apt install make" in str(err.value) and "install my-cc or put it on PATH" in str(
        err.value
    )


def test_the_tools_follow_the_targets_and_cc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "clang -m32")
    assert host_tools() == ("make", "clang")
    assert set(_tools_for(("host",), {})) == {"make", "clang"}
    assert set(_tools_for(("image",), {"BOARD": "due"})) == set(ARM_TOOLS)
    assert "arm-none-eabi-size" in _tools_for(("size",), {})
    monkeypatch.delenv("CC")
    assert set(_tools_for(("all",), {})) == {"make", "cc", *ARM_TOOLS}


def test_make_output_of_a_half_installed_toolchain_gets_a_package_hint() -> None:
    assert "libnewlib-arm-none-eabi" in _output_hint(
        "arm-none-eabi-gcc: fatal error: cannot read spec file 'nano.specs'"
    )
    assert "libc6-dev" in _output_hint("src/model.c:3:10: fatal error: stdio.h: No such file")
    assert _output_hint("src/model.c:12: error: expected ';'") == ""


def test_this_checkout_is_found_as_a_checkout() -> None:
    sources, installed = locate_sources()
    assert (sources, installed) == (ROOT / "firmware", False)


def test_a_checkout_tree_builds_in_place(tmp_path: Path) -> None:
    sources = _copy_of_sources(tmp_path)
    tree = prepare_tree(sources, cached=False)
    assert tree.workdir == sources and not tree.cached
    assert tree.lock == sources / "build" / ".lock"


def test_a_cached_tree_is_a_copy_named_by_the_sources_digest(tmp_path: Path) -> None:
    sources = _copy_of_sources(tmp_path)
    (sources / "build" / "host").mkdir(parents=True)
    (sources / "build" / "host" / "eddl-mcu-sim").write_text("a stale build")
    cache = tmp_path / "cache"
    tree = prepare_tree(sources, cached=True, cache=cache)
    assert tree.cached and tree.workdir == cache / source_digest(sources)
    copied = sorted(p.relative_to(tree.workdir) for p in tree.workdir.rglob("*") if p.is_file())
    expected = sorted(
        p.relative_to(sources)
        for p in sources.rglob("*")
        if p.is_file() and p.relative_to(sources).parts[0] != "build"
    )
    assert copied == expected and Path("Makefile") in copied
    assert (tree.workdir / "src" / "model.c").read_bytes() == (
        sources / "src" / "model.c"
    ).read_bytes()
    assert not (tree.workdir / "build").exists()
    assert prepare_tree(sources, cached=True, cache=cache) == tree
    assert sorted(p.name for p in cache.iterdir()) == sorted([tree.workdir.name, tree.lock.name])


def test_changed_sources_get_a_new_build_folder(tmp_path: Path) -> None:
    sources = _copy_of_sources(tmp_path)
    cache = tmp_path / "cache"
    before = prepare_tree(sources, cached=True, cache=cache)
    with (sources / "host" / "main_host.c").open("a") as fh:
        fh.write("/* edited */\n")
    after = prepare_tree(sources, cached=True, cache=cache)
    assert after.workdir != before.workdir
    assert (after.workdir / "host" / "main_host.c").read_text().endswith("/* edited */\n")
    assert not (before.workdir / "host" / "main_host.c").read_text().endswith("/* edited */\n")
    (sources / "build").mkdir()
    (sources / "build" / "x.o").write_bytes(b"\0")
    assert source_digest(sources) == after.workdir.name  # build outputs are not sources


def test_a_partial_copy_left_by_a_crash_is_replaced(tmp_path: Path) -> None:
    sources = _copy_of_sources(tmp_path)
    cache = tmp_path / "cache"
    partial = cache / f"{source_digest(sources)}.partial"
    partial.mkdir(parents=True)
    (partial / "Makefile").write_text("truncated")
    tree = prepare_tree(sources, cached=True, cache=cache)
    assert (tree.workdir / "Makefile").read_bytes() == (sources / "Makefile").read_bytes()
    assert not partial.exists()


def test_an_unwritable_cache_is_a_firmware_error(tmp_path: Path) -> None:
    sources = _copy_of_sources(tmp_path)
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(FirmwareError, match="build lock"):
        prepare_tree(sources, cached=True, cache=blocker / "eddl")


def test_a_held_lock_makes_a_second_build_wait_then_give_up(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    with lock.open("a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(FirmwareError, match="another firmware build held"), _locked(lock, 0.3):
            pass
        fcntl.flock(holder, fcntl.LOCK_UN)
    with _locked(lock, 0.3):
        pass  # free again
