"""Real builds of the host simulator in the per-user cache (as an installed EDDL does them)."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from eddl.mcu.build import FirmwareError, build_output, prepare_tree, require_tools
from eddl.mcu.driver import Device
from eddl.mcu.launch import start_sim

ROOT = Path(__file__).resolve().parents[2]
SIM = Path("build", "host", "eddl-mcu-sim")


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    require_tools(("make", "cc"))
    dest = tmp_path / "site-packages" / "eddl" / "firmware"
    shutil.copytree(ROOT / "firmware", dest, ignore=shutil.ignore_patterns("build"))
    return dest


def test_two_builds_at_once_share_one_cached_simulator(sources: Path, tmp_path: Path) -> None:
    tree = prepare_tree(sources, cached=True, cache=tmp_path / "cache")
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(build_output, SIM, ("host",), tree=tree) for _ in range(2)]
        built = {f.result(timeout=300) for f in futures}
    assert built == {tree.workdir / SIM}
    assert (tree.workdir / "build" / "host" / "eddl-mcu-sim.built").is_file()
    assert not (sources / "build").exists()  # the installed sources are never written
    with (
        start_sim("tcp", lifetime=30, binary=tree.workdir / SIM) as launched,
        Device.open(launched.url, timeout=5.0) as dev,
    ):
        assert dev.info is not None and dev.info.board == "host-sim"


def test_a_cached_simulator_needs_no_compiler_after_its_build(
    sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = prepare_tree(sources, cached=True, cache=tmp_path / "cache")
    first = build_output(SIM, ("host",), tree=tree)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert build_output(SIM, ("host",), tree=tree) == first
    first.with_name("eddl-mcu-sim.built").unlink()  # as if the build had been killed
    with pytest.raises(FirmwareError, match=r"make, cc; on Debian or Ubuntu: sudo apt install"):
        build_output(SIM, ("host",), tree=tree)


def test_a_checkout_rebuilds_in_place_and_checks_its_compiler_first(
    sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = prepare_tree(sources, cached=False)
    built = build_output(SIM, ("host",), tree=tree)
    assert built == sources / SIM and not built.with_name("eddl-mcu-sim.built").exists()
    only_make = tmp_path / "only-make"
    only_make.mkdir()
    make = shutil.which("make")
    assert make is not None
    (only_make / "make").symlink_to(make)
    monkeypatch.setenv("PATH", str(only_make))
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(FirmwareError, match="gcc libc6-dev"):
        build_output(SIM, ("host",), tree=tree)


def test_a_failed_compile_reports_makes_output(sources: Path, tmp_path: Path) -> None:
    with (sources / "src" / "model.c").open("a") as fh:
        fh.write("this is not C\n")
    tree = prepare_tree(sources, cached=True, cache=tmp_path / "cache")
    with pytest.raises(FirmwareError, match=r"(?s)make -s -C .* host failed:.*model\.c"):
        build_output(SIM, ("host",), tree=tree)
    assert not (tree.workdir / "build" / "host" / "eddl-mcu-sim.built").exists()
