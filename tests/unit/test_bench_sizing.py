"""``bench.sizing``: its table says whether both forms of the round rule agree."""

from __future__ import annotations

from bench.sizing import measure


def test_the_table_checks_both_forms_agree_for_each_worker_count() -> None:
    body = measure([1, 5], calls=3)
    rows = [line for line in body.splitlines() if line.startswith("| ") and "yes" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| 1", "| 5"]
