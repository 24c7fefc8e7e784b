"""The worker daemon, ``eddl-worker`` (package ``eddl.worker``, folder ``worker/``).

* ``config``   ``WorkerConfig``: leader addresses, join token, local datasets, throttle, backoff.
* ``link``     the connection to the leader: channel, leader list, exponential backoff.
* ``unreachable`` what the worker logs while no leader answers: where, for how long.
* ``data``     training samples by index: local dataset or ``FetchSamples`` from the leader.
* ``training`` one task with ``eddl.learn`` in a thread, with the ``--throttle`` slow-down.
* ``transfer`` the update as a client stream of chunks; the model reassembled from a stream.
* ``daemon``   ``WorkerDaemon``: join, heartbeats, task loop (a task the leader voids is
  cancelled), update push, clean leave.
* ``mcu_runner`` a task on a microcontroller: SETUP / LOAD / TRAIN / READ, bit-exact with
  ``training``; the device benchmark a gateway runs before joining a device.
* ``gateway``  ``Gateway`` (``eddl-worker --mcu URL ...``): one ``McuAgent`` per device joins
  the cluster as the device; lost devices leave and are looked for again.
* ``main``     the ``eddl-worker`` entry point: flags, config, logging, signal handling.
"""

from eddl.worker.config import WorkerConfig
from eddl.worker.daemon import JoinRefusedError, WorkerDaemon
from eddl.worker.gateway import Gateway, McuAgent

__all__ = ["Gateway", "JoinRefusedError", "McuAgent", "WorkerConfig", "WorkerDaemon"]
