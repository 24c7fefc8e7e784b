"""The worker daemon, ``eddl-worker`` (package ``eddl.worker``, folder ``worker/``).

* ``config``   ``WorkerConfig``: leader addresses, join token, local datasets, throttle, backoff.
* ``link``     the connection to the leader: channel, leader list, exponential backoff.
* ``unreachable`` what the worker logs while no leader answers: where, for how long.
* ``data``     training samples by index: local dataset or ``FetchSamples`` from the leader.
* ``executor`` the ``Executor`` interface a daemon runs tasks with, the typed ``TaskSpec`` it
  receives (never protobuf) and the ``TaskResult`` it returns; a task fails by raising.
* ``training`` ``NumpyExecutor``: one task with ``eddl.learn`` in a thread, with the
  ``--throttle`` slow-down (``TaskRunner``).
* ``presence`` what a node tells the leader about itself (role, join request, heartbeats);
  ``HostPresence`` for a Python worker on this host.
* ``transfer`` the update as a client stream of chunks; the model reassembled from a stream;
  ``Transfers``: a node's model pulls (or the model a ``GetTask`` reply carries inline),
  update pushes and failure reports, sample fetches, each timed (the link estimates).
* ``session``  ``LeaderSession``: the node's membership at its leader; join, every call with
  retry and rejoin (leader away, node forgotten, not the root), leave.
* ``heartbeat`` ``Heartbeats``: beats with jitter; a reply may cancel the task in flight.
* ``tasks``    ``TaskLoop``: ``GetTask`` long-polls (the next one asked during the push), a
  task's run (a task the leader voids is cancelled, a task that raises is reported failed),
  the node's counters; ``task_from_proto``, where protobuf tasks become ``TaskSpec``.
* ``daemon``   ``WorkerDaemon(config, executor, presence=...)``: owns the session, transfers,
  heartbeats and task loop and runs them until it stops, then leaves cleanly; ``on_task``
  hooks hear each pushed task's ``TaskTiming`` (the metrics' task durations).
* ``mcu_runner`` ``McuTaskRunner``: a task on a microcontroller, SETUP / LOAD / TRAIN / READ,
  bit-exact with ``training``; a TinyMetaFed inner loop on the device.
* ``mcu_executor`` ``McuExecutor``: the device's executor (one task at a time, the device lost
  on a link failure or a wrong update); ``McuCounters``.
* ``metatask`` a Python worker's part of a ``tinymetafed`` or ``reptile`` round.
* ``mcu_meta`` a microcontroller's part of a ``tinymetafed`` or ``reptile`` round.
* ``mcu_bench`` the device benchmark a gateway runs before joining a device.
* ``gateway``  ``Gateway`` (``eddl-worker --mcu URL ...``): one ``McuAgent`` per device, a
  daemon with the device's ``McuExecutor`` and ``McuPresence``, joins the cluster as the
  device; lost devices leave and are looked for again.
* ``leading``  ``CanLead`` (``--can-lead``): the sub-leader beside the worker loop; over mTLS
  enrolled with the token the root hands a worker it promoted, and only then served.
* ``main``     the ``eddl-worker`` entry point: flags, config, logging, signal handling.
"""

from eddl.worker.config import WorkerConfig
from eddl.worker.daemon import JoinRefusedError, WorkerDaemon
from eddl.worker.executor import Executor, TaskError, TaskResult, TaskSpec
from eddl.worker.gateway import Gateway, McuAgent
from eddl.worker.mcu_executor import McuExecutor
from eddl.worker.training import NumpyExecutor

__all__ = [
    "Executor",
    "Gateway",
    "JoinRefusedError",
    "McuAgent",
    "McuExecutor",
    "NumpyExecutor",
    "TaskError",
    "TaskResult",
    "TaskSpec",
    "WorkerConfig",
    "WorkerDaemon",
]
