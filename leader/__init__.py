"""The leader (``eddl-leader``): membership, jobs, scheduling, aggregation, checkpoints.

The logic is plain, synchronous classes testable without gRPC; the servicers only translate.

* ``actor``       ``LeaderCore``: the one owner of leader state (an owner thread) behind an
  async facade; ``StoreWriter`` commits the commands' writes beside it (queued batches
  grouped in one transaction).
* ``evaluation``  ``Evaluator``: versions evaluated beside the owner (newest pending first),
  results posted back as commands; a job stays ``ending`` until its last version is evaluated.
* ``service``     ``LeaderService``: the use cases the servicers call, typed results
  (``views``); ``handout``: job wire form, task seeds, model cache, node reports;
  ``longpoll``: waiting GetTask calls answered together after each domain event.
* ``ports``       ``Leadership`` (adapters ``leadership.StaticLeadership`` and
  ``election.EtcdLeadership``), ``Clock``, ``EventSink``; ``statedir``: one leader process per
  state directory.
* ``etcd``        ``EtcdClient``: etcd's v3 JSON gateway (leases, txn, watch) for elections;
  ``election``: ``EtcdLeadership`` (root key, terms, who stands, fencing by lease).
* ``ha``          ``HaNode``: a candidate's election, promotion, standby and root sides;
  ``replication`` (``ReplicatingStore``, ``Replicator``: each committed write reaches the
  standbys before the reply), ``standby`` (the receiving side), ``replica`` (payloads,
  snapshots, wire form).
* ``coordinator`` ``Coordinator``: the commands (join, heartbeat, leave, tick, submit/cancel
  jobs, next_task, submit_update, fail_task); ``queries`` its read side, ``replies`` its replies.
* ``jobqueue``    ``JobQueue``: jobs run one at a time in submission order; resume after restart.
* ``run``         ``JobRun``: one running job; ``progress`` (versions, checkpoints,
  deadlines, the end), ``runstatus`` (status), ``updates`` (``UpdateSink``, update checks).
* ``history``     what a job did, for its status: mode switches, tasks and samples per node.
* ``rounds``      ``SyncRound``: who got a task in a sync round and when it may close.
* ``membership``  nodes, join tokens, heartbeats with a patience of 2 missed beats, expiry.
* ``capability``  what a node can run: MCU capabilities (from its McuProfile) and the job fit rule.
* ``layers``      TIFeD single-layer mode: which node trains which layer (the layer groups).
* ``jobs``        ``JobSpec`` (from ``eddl.jobspec``, shared with the CLI): a submitted job.
* ``runtime``     ``JobRuntime``: the model, data and evaluation a job gets from eddl.learn/data.
* ``scheduler``   EDDL's dynamic distribution of index ranges sized from runtime profiles
  (and the static-shards baseline): ``sizing``, ``source`` (``TaskSource``), ``ledger``.
* leader role splitting: ``upstream`` (a sub-leader's ``UpstreamSource``), ``relay``
  (its ``RelaySink``), ``uplink`` (its calls to its own leader), ``subleader`` and
  ``subleader_daemon`` (the sub-leader, ``eddl-leader --upstream``),
  ``subleader_credentials`` (its copy of the root's revocations, its renewal over mTLS),
  ``splitting`` (the root's ``SplitPolicy`` and ``plan_groups``), ``syncmeter`` (BUC and
  link share at the edge).
* ``aggregator``  the global model and version; sync rounds and async rules of eddl.learn.
* ``policy``      the automatic sync/async switch with hysteresis
  (docs/architecture.md#the-syncasync-policy).
* ``store``       the checkpoint store, gathered from ``checkpoint`` (interface, records),
  ``sqlite_store`` (the state directory's SQLite file) and ``memory_store`` (in-memory twin);
  ``outbox`` gathers a command's writes into one batch.
* ``events``      typed, numbered job events for logs, ``eddl watch`` and ``eddl status``.
* ``errors``      typed errors, each with the gRPC status code it maps to.
* ``config``, ``server``, ``servicers``, ``main``  the daemon around the logic (wire side).
"""

from eddl.leader.coordinator import Coordinator, HeartbeatReply, JoinReply, ModelSnapshot
from eddl.leader.errors import LeaderError
from eddl.leader.events import Event, EventKind
from eddl.leader.jobs import JobSpec, load_job_file, parse_job_toml
from eddl.leader.membership import Membership, NodeProfile, Role
from eddl.leader.policy import AutoPolicy, PolicyConfig
from eddl.leader.run import UpdateAck, Wait
from eddl.leader.runtime import JobRuntime, build_runtime
from eddl.leader.scheduler import Scheduler, Task
from eddl.leader.store import CheckpointStore, MemoryStore, SqliteStore

__all__ = [
    "AutoPolicy",
    "CheckpointStore",
    "Coordinator",
    "Event",
    "EventKind",
    "HeartbeatReply",
    "JobRuntime",
    "JobSpec",
    "JoinReply",
    "LeaderError",
    "Membership",
    "MemoryStore",
    "ModelSnapshot",
    "NodeProfile",
    "PolicyConfig",
    "Role",
    "Scheduler",
    "SqliteStore",
    "Task",
    "UpdateAck",
    "Wait",
    "build_runtime",
    "load_job_file",
    "parse_job_toml",
]
