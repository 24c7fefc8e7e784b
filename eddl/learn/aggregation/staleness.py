"""Staleness functions S(s): how much an update based on a model ``s`` versions old counts.

From Xie et al., *Asynchronous Federated Optimization* (FedAsync): every function is 1 at
``s = 0`` and non-increasing in ``s``. FedBuff's ``1/sqrt(1+s)`` is ``Polynomial(a=0.5)``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from eddl.learn.aggregation.base import AggregationError, _is_int
from eddl.learn.aggregation.checks import check_positive_int, check_real

__all__ = ["STALENESS_NAMES", "Constant", "Hinge", "Polynomial", "Staleness", "make_staleness"]


class Staleness(ABC):
    """A weight in (0, 1] for a staleness ``s >= 0``."""

    name: ClassVar[str]

    def __call__(self, s: int) -> float:
        if not _is_int(s) or s < 0:
            raise AggregationError(f"staleness must be an int >= 0, got {s!r}")
        return self._weight(int(s))

    @abstractmethod
    def _weight(self, s: int) -> float: ...

    @abstractmethod
    def params(self) -> dict[str, object]:
        """The function's parameters under the keys ``make_rule`` takes (``staleness_a``...)."""


@dataclass(frozen=True)
class Constant(Staleness):
    """S(s) = 1: staleness is ignored."""

    name: ClassVar[str] = "constant"

    def _weight(self, s: int) -> float:
        return 1.0

    def params(self) -> dict[str, object]:
        return {}


@dataclass(frozen=True)
class Polynomial(Staleness):
    """S(s) = (1 + s)^-a, 0 < a <= 10 (beyond 10 the weight of a stale update underflows)."""

    name: ClassVar[str] = "polynomial"
    a: float = 0.5

    def __post_init__(self) -> None:
        check_real(self.a, "polynomial staleness a", low=0.0, high=10.0, low_open=True)

    def _weight(self, s: int) -> float:
        # pow through exp/log1p keeps huge s from overflowing (1+s)**a before inverting.
        return math.exp(-self.a * math.log1p(s))

    def params(self) -> dict[str, object]:
        return {"staleness_a": self.a}


@dataclass(frozen=True)
class Hinge(Staleness):
    """S(s) = 1 for s <= b, else 1 / (a (s - b) + 1); 0 < a <= 1000, b >= 0."""

    name: ClassVar[str] = "hinge"
    a: float = 10.0
    b: int = 4

    def __post_init__(self) -> None:
        check_real(self.a, "hinge staleness a", low=0.0, high=1000.0, low_open=True)
        check_positive_int(self.b, "hinge staleness b", minimum=0)

    def _weight(self, s: int) -> float:
        if s <= self.b:
            return 1.0
        return 1.0 / (self.a * (s - self.b) + 1.0)

    def params(self) -> dict[str, object]:
        return {"staleness_a": self.a, "staleness_b": self.b}


STALENESS_NAMES = ("constant", "polynomial", "hinge")


def make_staleness(name: object, *, a: object = None, b: object = None) -> Staleness:
    """Build a staleness function by name; refuse parameters it does not take."""
    if name == "constant":
        if a is not None or b is not None:
            raise AggregationError("constant staleness takes no staleness_a / staleness_b")
        return Constant()
    if name == "polynomial":
        if b is not None:
            raise AggregationError("polynomial staleness takes no staleness_b")
        return Polynomial() if a is None else Polynomial(a=a)  # type: ignore[arg-type]
    if name == "hinge":
        kwargs: dict[str, object] = {}
        if a is not None:
            kwargs["a"] = a
        if b is not None:
            kwargs["b"] = b
        return Hinge(**kwargs)  # type: ignore[arg-type]
    raise AggregationError(
        f"unknown staleness function {name!r}; known: {', '.join(STALENESS_NAMES)}"
    )
