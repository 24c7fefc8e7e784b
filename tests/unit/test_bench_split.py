"""The split benchmark's feed: measured syncs per client count into the split policy."""

from __future__ import annotations

from bench.split import Measured, decisions, report
from eddl.leader.splitting import SplitConfig


def rows(bucs: dict[int, float]) -> list[Measured]:
    return [Measured(n, 100.0, (n / buc,) * 50) for n, buc in bucs.items()]


def test_rising_buc_stays_flat_and_levelling_buc_promotes_at_that_count() -> None:
    got = decisions(rows({4: 315.0, 8: 356.0, 16: 398.5, 32: 400.9}), SplitConfig())
    assert [d.action for d in got] == ["stay", "stay", "stay", "promote"]
    assert got[3].figures.previous_workers == 16 and got[3].figures.workers == 32
    text = report(rows({4: 315.0, 8: 356.0, 16: 398.5, 32: 400.9}), SplitConfig(), 6.0)
    assert "The policy promotes at n = 32." in text and "| 32 | 100.0 |" in text


def test_buc_rising_everywhere_never_promotes() -> None:
    got = decisions(rows({4: 100.0, 8: 200.0, 16: 400.0}), SplitConfig())
    assert {d.action for d in got} == {"stay"}
