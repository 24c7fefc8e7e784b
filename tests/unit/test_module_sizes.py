"""The leader's modules stay small: none over 400 lines (servicers included)."""

from __future__ import annotations

from pathlib import Path

LEADER = Path(__file__).resolve().parents[2] / "leader"
MAX_LINES = 400


def test_no_leader_module_over_400_lines() -> None:
    modules = sorted(LEADER.rglob("*.py"))
    assert modules, f"no modules found under {LEADER}"
    too_long = {
        str(path.relative_to(LEADER)): n
        for path in modules
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not too_long, f"leader modules over {MAX_LINES} lines: {too_long}"
