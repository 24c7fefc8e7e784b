"""The worker daemon, ``eddl-worker`` (package ``eddl.worker``, folder ``worker/``).

* ``config``   ``WorkerConfig``: leader addresses, join token, local datasets, throttle, backoff.
* ``link``     the connection to the leader: channel, leader list, exponential backoff.
* ``data``     training samples by index: local dataset or ``FetchSamples`` from the leader.
* ``training`` one task with ``eddl.learn`` in a thread, with the ``--throttle`` slow-down.
* ``transfer`` the update as a client stream of chunks; the model reassembled from a stream.
* ``daemon``   ``WorkerDaemon``: join, heartbeats, task loop (a task the leader voids is
  cancelled), update push, clean leave.
* ``main``     the ``eddl-worker`` entry point: flags, config, logging, signal handling.
"""

from eddl.worker.config import WorkerConfig
from eddl.worker.daemon import JoinRefusedError, WorkerDaemon

__all__ = ["JoinRefusedError", "WorkerConfig", "WorkerDaemon"]
