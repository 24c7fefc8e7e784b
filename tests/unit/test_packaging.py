"""The package list in pyproject.toml covers every package folder (leader/ -> eddl.leader...)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAPPED = {"leader": "eddl.leader", "worker": "eddl.worker", "profiler": "eddl.profiler"}


def _package_name(folder: Path) -> str:
    parts = folder.relative_to(ROOT).parts
    head = MAPPED.get(parts[0], parts[0])
    return ".".join([head, *parts[1:]])


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        _package_name(init.parent)
        for top in ("eddl", *MAPPED)
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - found == set(), "these listed packages have no folder"
    for package, folder in config["package-dir"].items():
        assert (ROOT / folder / "__init__.py").exists(), package
