"""Training samples by index: from a local copy of the dataset, or fetched from the leader.

EDDL's dynamic distribution sends indexes, not data. A worker that holds the dataset (the
shipped ones, or any listed in ``WorkerConfig.datasets``) reads rows locally; otherwise it asks
the leader with ``FetchSamples`` and keeps what it received, so each sample crosses the network
at most once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from eddl.data import load_dataset

__all__ = ["RemoteFetch", "SampleSource", "SampleSourceError"]

# (job id, dataset, indexes) -> (x uint8 (n, features), y int64 (n,)) for exactly those indexes.
RemoteFetch = Callable[[str, str, Sequence[int]], Awaitable[tuple[np.ndarray, np.ndarray]]]


class SampleSourceError(ValueError):
    """Samples cannot be served: unknown dataset, index out of range, or a bad reply."""


class _Cache:
    def __init__(self) -> None:
        self.x: dict[int, np.ndarray] = {}
        self.y: dict[int, int] = {}


class SampleSource:
    def __init__(self, local: Sequence[str], fetch: RemoteFetch) -> None:
        self._local = set(local)
        self._fetch = fetch
        self._cache: dict[str, _Cache] = {}
        self.fetched_samples = 0

    def is_local(self, dataset: str) -> bool:
        return dataset in self._local

    async def get(
        self, job_id: str, dataset: str, indexes: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        if not indexes:
            raise SampleSourceError("a task with no sample indexes")
        if self.is_local(dataset):
            ds = load_dataset(dataset)
            idx = np.asarray(indexes, dtype=np.int64)
            if idx.min() < 0 or idx.max() >= len(ds.y_train):
                raise SampleSourceError(f"{dataset}: index out of range 0..{len(ds.y_train) - 1}")
            return ds.x_train[idx], ds.y_train[idx]
        cache = self._cache.setdefault(dataset, _Cache())
        missing = sorted({int(i) for i in indexes} - cache.y.keys())
        if missing:
            x, y = await self._fetch(job_id, dataset, missing)
            if len(x) != len(missing) or len(y) != len(missing):
                raise SampleSourceError(
                    f"{dataset}: asked for {len(missing)} samples, got {len(x)}/{len(y)}"
                )
            for row, i in enumerate(missing):
                cache.x[i] = x[row]
                cache.y[i] = int(y[row])
            self.fetched_samples += len(missing)
        xs = np.stack([cache.x[int(i)] for i in indexes])
        ys = np.array([cache.y[int(i)] for i in indexes], dtype=np.int64)
        return xs, ys
