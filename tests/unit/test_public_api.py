"""Every module of eddl declares its public surface in ``__all__``, and every name in it exists."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import eddl

SKIP_PREFIXES = ("eddl.proto.v1.",)  # generated code


def _modules() -> list[str]:
    names = ["eddl"]
    for info in pkgutil.walk_packages(eddl.__path__, prefix="eddl."):
        if info.name.startswith(SKIP_PREFIXES) or info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_module_declares_all_and_every_name_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if module.__name__ != name or (exported is None and not hasattr(module, "__path__")):
        # A module without __all__ is only acceptable for a package __init__ that exports
        # nothing (a docstring index of its submodules).
        assert exported is not None, f"{name} has no __all__"
    for attr in exported or []:
        assert hasattr(module, attr), f"{name}.__all__ names missing {attr!r}"
    assert len(set(exported or [])) == len(exported or []), f"{name}.__all__ repeats a name"
