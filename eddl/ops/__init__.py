"""Operating EDDL: what a cluster's operators and their tools see of the daemons.

* :mod:`~eddl.ops.sdnotify`: systemd's readiness protocol (``READY=1``, ``STATUS=``,
  ``STOPPING=1``, ``WATCHDOG=1``) as datagrams to ``$NOTIFY_SOCKET``.
* :mod:`~eddl.ops.health`: ask a daemon's gRPC health service (``eddl health``).
* :mod:`~eddl.ops.sink`: counters counted where things happen (updates taken and refused,
  bytes on the wire, how long an update took), and :mod:`~eddl.ops.interceptor`, the gRPC
  server interceptor that feeds it at the edge, outside the leader's logic.
* :mod:`~eddl.ops.leader_metrics` and :mod:`~eddl.ops.worker_metrics`: Prometheus collectors
  that read a typed snapshot of a daemon at scrape time (and, for a worker, the task durations
  its ``on_task`` hook counts); :mod:`~eddl.ops.metrics_http` serves
  them (``--metrics-bind``); :mod:`~eddl.ops.wiring` connects all of this to a daemon.
* :mod:`~eddl.ops.run_data` reads a finished or running job from a leader's store;
  :mod:`~eddl.ops.report` turns it into a static HTML report with plots (``eddl report``,
  ``eddl local --report``). ``eddl logs`` (:mod:`eddl.cli.logs`) prints a job's events.
"""
