"""The checkpoint store: jobs, model versions, events, members and the leadership record, so a
restarted leader resumes.

:class:`CheckpointStore` is the interface; :class:`SqliteStore` keeps everything in one SQLite
file in the leader's state directory (``<state_dir>/leader.sqlite3``), :class:`MemoryStore`
keeps it in memory (tests, throw-away runs). Both pass the same contract suite
(``tests/unit/test_leader_store.py``).

A model version is stored tensor by tensor with its name, dtype and shape, next to a JSON
``meta`` (the scheduler's progress, the aggregation mode, accuracy...). Versions of a job only
grow: saving a version not above the latest is a :class:`StoreError`, which is what makes
"versions continue with none lost" checkable. SQLite runs in WAL mode with one transaction per
call, so a leader killed with SIGKILL loses nothing that a call had returned from.

This module gathers them: the interface and its records live in ``checkpoint``, the two
implementations in ``memory_store`` and ``sqlite_store``.
"""

from eddl.leader.checkpoint import (
    JOB_STATUSES,
    STORE_FILE,
    CheckpointStore,
    JobRecord,
    JobStatusChange,
    JobStatusName,
    LeadershipRecord,
    MemberRecord,
    VersionRecord,
    WriteBatch,
)
from eddl.leader.memory_store import MemoryStore
from eddl.leader.sqlite_store import SqliteStore

__all__ = [
    "JOB_STATUSES",
    "STORE_FILE",
    "CheckpointStore",
    "JobRecord",
    "JobStatusChange",
    "JobStatusName",
    "LeadershipRecord",
    "MemberRecord",
    "MemoryStore",
    "SqliteStore",
    "VersionRecord",
    "WriteBatch",
]
