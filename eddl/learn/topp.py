"""Top-P% selective communication: a device sends only the largest entries of its update.

:func:`top_p` keeps the ``ceil(P/100 · N)`` entries of largest magnitude among all ``N``
entries of the tensors it is given (one threshold across tensors, the literal reading of "the
P% largest-magnitude entries of φ − θ"); ties at the threshold are broken by position, lowest
flat index of the lowest tensor first, so the selection is deterministic. Each tensor's entries
come back as sorted flat indexes and float32 values (:class:`SparseDelta`); :func:`densify`
puts them back into zeros. With ``P = 100`` every entry is kept and ``densify`` returns the
dense update exactly.

:func:`top_p_feedback` is top-P with error feedback (residual accumulation, as in Stich et
al.'s sparsified SGD with memory): the device adds what it did not send last time to its new
delta, selects the top-P of the sum, and keeps the rest for its next round. Nothing is lost,
only late; with ``P = 100`` the residual is zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from eddl.learn.params import Params

__all__ = ["SparseDelta", "TopPError", "densify", "kept_entries", "top_p", "top_p_feedback"]


class TopPError(ValueError):
    """A bad percentage, or sparse entries that do not fit their tensor."""


@dataclass(frozen=True)
class SparseDelta:
    """The kept entries of one tensor: sorted unique flat ``indices`` (int64), ``values``."""

    shape: tuple[int, ...]
    indices: np.ndarray
    values: np.ndarray

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __post_init__(self) -> None:
        idx, val = self.indices, self.values
        if idx.ndim != 1 or val.shape != idx.shape or val.dtype != np.float32:
            raise TopPError("indices and float32 values must be 1-D of equal length")
        if idx.size and (int(idx[0]) < 0 or int(idx[-1]) >= self.size):
            raise TopPError(f"indices outside a tensor of {self.size} entries")
        if idx.size > 1 and not bool(np.all(np.diff(idx) > 0)):
            raise TopPError("indices must be strictly increasing (sorted, no duplicates)")


def kept_entries(total: int, p: float) -> int:
    """How many of ``total`` entries P% keeps: ``ceil(P/100 · total)``, at least one."""
    if isinstance(p, bool) or not (math.isfinite(p) and 0.0 < p <= 100.0):
        raise TopPError(f"P must be in (0, 100], got {p!r}")
    # Rounded first so that 10% of 1000 is 100, not 101 from 100.00000000000001.
    return max(1, min(total, math.ceil(round(p / 100.0 * total, 9))))


def top_p(delta: Mapping[str, np.ndarray], p: float) -> dict[str, SparseDelta]:
    """The top-P% entries of ``delta`` by magnitude, per tensor (see the module docstring)."""
    if not delta:
        raise TopPError("nothing to select from")
    names = list(delta)
    flat = [np.asarray(delta[n], dtype=np.float32).ravel() for n in names]
    total = sum(f.size for f in flat)
    if total == 0:
        raise TopPError("the tensors hold no entries")
    keep = kept_entries(total, p)
    allv = np.concatenate(flat)
    if not np.isfinite(allv).all():
        raise TopPError("the update holds NaN or Inf")
    # A stable sort on -|v| puts ties in position order: deterministic, and exact for P = 100.
    chosen = np.sort(np.argsort(-np.abs(allv), kind="stable")[:keep])
    out: dict[str, SparseDelta] = {}
    start = 0
    for name, f in zip(names, flat, strict=True):
        lo, hi = np.searchsorted(chosen, [start, start + f.size])
        idx = (chosen[lo:hi] - start).astype(np.int64)
        shape = tuple(int(d) for d in np.shape(delta[name]))
        out[name] = SparseDelta(shape, idx, f[idx].copy())
        start += f.size
    return out


def densify(sparse: Mapping[str, SparseDelta]) -> Params:
    """Dense float32 tensors with the kept entries in place and zeros elsewhere."""
    out: Params = {}
    for name, s in sparse.items():
        dense = np.zeros(s.size, dtype=np.float32)
        dense[s.indices] = s.values
        out[name] = dense.reshape(s.shape)
    return out


def top_p_feedback(
    delta: Mapping[str, np.ndarray], residual: Mapping[str, np.ndarray] | None, p: float
) -> tuple[dict[str, SparseDelta], Params]:
    """Top-P of ``delta + residual``, and the new residual: the entries not selected."""
    if residual is not None:
        if set(residual) != set(delta):
            raise TopPError(f"residual names {sorted(residual)} differ from {sorted(delta)}")
        for name, r in residual.items():
            if np.shape(r) != np.shape(delta[name]):
                want = np.shape(delta[name])
                raise TopPError(f"residual {name} has shape {np.shape(r)}, not {want}")
    acc = {
        n: np.asarray(d, dtype=np.float32) + (0.0 if residual is None else residual[n])
        for n, d in delta.items()
    }
    selected = top_p(acc, p)
    sent = densify(selected)
    return selected, {n: (a - sent[n]).astype(np.float32) for n, a in acc.items()}
