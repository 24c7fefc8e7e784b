"""A group's training samples: fetched from the sub-leader's own leader once, served to every
member that asks.

A member without the dataset asks its sub-leader (``FetchSamples``); the sub-leader answers
the rows it holds and fetches only the missing ones upward, as itself. So a sample crosses the
root's link once per group, not once per member. The rows are kept for the current job and
dataset only (a new one starts afresh) and up to ``max_bytes``; past that, rows are served
without being kept.

What the leader sends is checked before use: as many rows of ``x`` and ``y`` as indexes asked
for, every ``x`` row of one shape (:class:`GroupSamplesError` otherwise; nothing is kept).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np

__all__ = ["DEFAULT_MAX_BYTES", "Fetch", "GroupSamples", "GroupSamplesError"]

DEFAULT_MAX_BYTES = 256 << 20

# (job id, dataset, indexes) -> (x, y) from the sub-leader's own leader
Fetch = Callable[[str, str, np.ndarray], Awaitable[tuple[np.ndarray, np.ndarray]]]


class GroupSamplesError(ValueError):
    """The leader's answer does not match what was asked for."""


class GroupSamples:
    def __init__(self, fetch: Fetch, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self._fetch = fetch
        self.max_bytes = max_bytes
        self._key: tuple[str, str] | None = None
        self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._bytes = 0
        self._shape: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        self.fetched = 0  # rows fetched upward
        self.served = 0  # rows served to members

    @property
    def held(self) -> int:
        return len(self._rows)

    async def get(
        self, job_id: str, dataset: str, indexes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``indexes`` of the job's dataset, in that order."""
        if (job_id, dataset) != self._key:
            self._key, self._rows, self._bytes, self._shape = (job_id, dataset), {}, 0, None
        wanted = [int(i) for i in indexes]
        missing = list(dict.fromkeys(i for i in wanted if i not in self._rows))
        fresh: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if missing:
            x, y = await self._fetch(job_id, dataset, np.asarray(missing, dtype=np.int64))
            if len(x) != len(missing) or len(y) != len(missing):
                raise GroupSamplesError(
                    f"the leader sent {len(x)} x and {len(y)} y rows for {len(missing)} indexes"
                )
            fresh = {i: (x[k], y[k]) for k, i in enumerate(missing)}
        rows = [self._rows.get(i) or fresh[i] for i in wanted]
        shapes = {(r[0].shape, r[1].shape) for r in rows}
        if self._shape is not None:
            shapes.add(self._shape)
        if len(shapes) > 1:
            raise GroupSamplesError("the leader sent rows of different shapes")
        self._shape = shapes.pop() if shapes else None
        self.fetched += len(fresh)
        self._keep(fresh)
        self.served += len(wanted)
        return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])

    def _keep(self, fresh: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        for i, (x, y) in fresh.items():
            size = x.nbytes + y.nbytes
            if self._bytes + size > self.max_bytes:
                return
            self._rows[i] = (x, y)
            self._bytes += size
