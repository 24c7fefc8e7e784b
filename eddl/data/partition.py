"""Partitioners: split a training set's indexes across N clients, seeded.

* IID: a seeded permutation cut into N near-equal parts (sizes differ by at most one).
* Dirichlet(α): for each class, client proportions drawn from Dir(α·1); small α gives strongly
  non-IID clients. Every client is guaranteed at least ``min_size`` samples (redrawn otherwise,
  a bounded number of times).
"""

from __future__ import annotations

import numpy as np

__all__ = ["PartitionError", "parse_partition", "partition", "partition_dirichlet", "partition_iid"]


class PartitionError(ValueError):
    """A partition cannot be made as asked."""


def partition_iid(num_samples: int, clients: int, seed: int) -> list[np.ndarray]:
    if clients < 1:
        raise PartitionError(f"clients must be >= 1, got {clients}")
    if num_samples < clients:
        raise PartitionError(f"{num_samples} samples cannot feed {clients} clients")
    perm = np.random.default_rng(seed).permutation(num_samples)
    return [np.sort(part) for part in np.array_split(perm, clients)]


def partition_dirichlet(
    labels: np.ndarray,
    clients: int,
    alpha: float,
    seed: int,
    min_size: int = 1,
    max_tries: int = 100,
) -> list[np.ndarray]:
    if clients < 1:
        raise PartitionError(f"clients must be >= 1, got {clients}")
    if not alpha > 0 or not np.isfinite(alpha):
        raise PartitionError(f"dirichlet alpha must be a positive number, got {alpha}")
    if len(labels) < clients * min_size:
        raise PartitionError(f"{len(labels)} samples cannot give {clients} clients {min_size} each")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            share = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(share)[:-1] * len(idx)).astype(np.int64)
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].append(chunk)
        result = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in result) >= min_size:
            return result
    raise PartitionError(
        f"no Dirichlet({alpha}) draw gave every one of {clients} clients >= {min_size} samples "
        f"in {max_tries} tries; raise alpha or lower the client count"
    )


def parse_partition(text: str) -> tuple[str, float | None]:
    """``"iid"`` -> ("iid", None); ``"dirichlet:0.5"`` -> ("dirichlet", 0.5)."""
    if text == "iid":
        return "iid", None
    kind, _, value = text.partition(":")
    if kind == "dirichlet" and value:
        try:
            alpha = float(value)
        except ValueError:
            raise PartitionError(f"bad dirichlet alpha {value!r}") from None
        if not alpha > 0 or not np.isfinite(alpha):
            raise PartitionError(f"dirichlet alpha must be a positive number, got {value}")
        return "dirichlet", alpha
    raise PartitionError(f"unknown partition {text!r}; use 'iid' or 'dirichlet:ALPHA'")


def partition(text: str, labels: np.ndarray, clients: int, seed: int) -> list[np.ndarray]:
    """Partition by a spec string (see :func:`parse_partition`)."""
    kind, alpha = parse_partition(text)
    if kind == "iid":
        return partition_iid(len(labels), clients, seed)
    assert alpha is not None
    return partition_dirichlet(labels, clients, alpha, seed)
