"""The leader's gRPC servicers: thin translations between the wire and the ``Coordinator``.

* ``common``  envelope checks, the error-to-status wrapper, the long-poll ``Notifier``.
* ``cluster`` ``ClusterServicer``: Join, Heartbeat, GetTask, PushUpdate, PullModel,
  FetchSamples, Leave (called by workers).
* ``admin``   ``AdminServicer``: SubmitJob, JobStatus, WatchJob, ListNodes, CancelJob (the CLI).
"""

from eddl.leader.servicers.admin import AdminServicer
from eddl.leader.servicers.cluster import ClusterServicer
from eddl.leader.servicers.common import Notifier

__all__ = ["AdminServicer", "ClusterServicer", "Notifier"]
