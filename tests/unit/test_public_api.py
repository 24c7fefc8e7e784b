"""Every module of eddl declares its public surface in ``__all__``, and every name in it exists."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

SKIP_PREFIXES = ("eddl.proto.v1.",)  # generated code


# eddl.leader, eddl.worker and eddl.profiler live in their own folders (package-dir mapping),
# so they are walked from their own paths.
ROOTS = ("eddl", "eddl.leader", "eddl.worker", "eddl.profiler")


def _modules() -> list[str]:
    names = list(ROOTS)
    for root in ROOTS:
        package = importlib.import_module(root)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{root}."):
            if info.name.startswith(SKIP_PREFIXES) or info.name.endswith("__main__"):
                continue
            names.append(info.name)
    return sorted(set(names))


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
