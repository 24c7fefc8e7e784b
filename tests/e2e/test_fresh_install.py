"""The README's path from a clone: a fresh venv, ``pip install .`` (not editable), then the main
command run inside the repository root, where the source ``eddl/`` folder (without the
``package-dir`` mapped ``eddl.leader``) must not shadow the installed package.

The venv is built once per module (:func:`fresh_venv`); every command a user runs after
installing belongs here as one more test using it. The microcontroller commands (``eddl mcu
sim``, ``eddl local --workers 2 --mcu 2``) join once the firmware sources ship as package data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

# What pip prints when it cannot reach an index (as opposed to a project that fails to build).
_UNREACHABLE = (
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Max retries exceeded",
    "ProxyError",
)


def _clean_env() -> dict[str, str]:
    """This environment without the test runner's venv or import path."""
    drop = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH", "PYTHONNOUSERSITE"}
    return {k: v for k, v in os.environ.items() if k not in drop}


@dataclass(frozen=True)
class FreshVenv:
    """A venv holding a normal (non-editable) install of this repository."""

    path: Path

    def bin(self, name: str) -> str:
        return str(self.path / "bin" / name)

    def run(
        self, argv: Sequence[str], *, timeout: float, cwd: Path = ROOT
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` (its first item a program of the venv) from ``cwd``."""
        return subprocess.run(
            [self.bin(argv[0]), *argv[1:]],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=_clean_env(),
        )


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> FreshVenv:
    where = tmp_path_factory.mktemp("fresh-install") / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", str(where)], check=True, timeout=300, env=_clean_env()
    )
    venv = FreshVenv(where)
    done = venv.run(["python", "-m", "pip", "install", str(ROOT)], timeout=1200, cwd=where.parent)
    if done.returncode != 0:
        output = done.stdout + done.stderr
        if any(marker in output for marker in _UNREACHABLE):
            pytest.skip(f"pip cannot reach a package index: {output.strip().splitlines()[-1]}")
        raise AssertionError(f"pip install {ROOT} failed:\n{output[-4000:]}")
    return venv


def test_the_installed_package_is_imported_even_from_the_repository_root(
    fresh_venv: FreshVenv,
) -> None:
    done = fresh_venv.run(
        ["python", "-P", "-c", "import eddl, eddl.leader; print(eddl.__file__)"], timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(fresh_venv.path), done.stdout


def test_eddl_local_from_the_repository_root_completes(fresh_venv: FreshVenv) -> None:
    done = fresh_venv.run(
        ["eddl", "local", "--workers", "4", "--throttle", "1,1,2,4", "--json"], timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["state"] == "completed", result
    assert result["throttle"] == [1.0, 1.0, 2.0, 4.0]
    assert set(result["exit_codes"].values()) == {0}, result["exit_codes"]
