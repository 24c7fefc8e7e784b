"""The leader's gRPC servicers: translations between the wire and ``LeaderService``.

* ``common``    envelope checks and the typed-error-to-status wrapper.
* ``cluster``   ``ClusterServicer``: Join, Heartbeat, GetTask, PushUpdate, PullModel,
  FetchSamples, Leave (called by workers).
* ``upload``    reading a PushUpdate stream: header checks, a failure report, the tensors.
* ``admin``     ``AdminServicer``: SubmitJob, JobStatus, WatchJob, ListNodes, CancelJob (the CLI).
* ``group``     ``GroupServicer``: the Cluster service of a sub-leader, for its group.
* ``root_only`` ``RootOnly``: a leader that is not the root refuses every Cluster and Admin
  call ``not-leader``, with the root's address.
"""

from eddl.leader.servicers.admin import AdminServicer
from eddl.leader.servicers.cluster import ClusterServicer

__all__ = ["AdminServicer", "ClusterServicer"]
