"""A whole EDDL cluster on one machine, as real processes (``eddl local``, benchmarks, tests).

* ``eddl.cluster.local``  :class:`LocalCluster`: a leader and N workers (and a gateway with
  emulated microcontrollers), started bound to this process and stopped in order; the default
  jobs of ``eddl local``.
"""

from eddl.cluster.local import (
    DEFAULT_JOB,
    MCU_BOARD,
    MCU_JOB,
    MCU_KINDS,
    LocalCluster,
    LocalClusterError,
    parse_throttles,
)

__all__ = [
    "DEFAULT_JOB",
    "MCU_BOARD",
    "MCU_JOB",
    "MCU_KINDS",
    "LocalCluster",
    "LocalClusterError",
    "parse_throttles",
]
