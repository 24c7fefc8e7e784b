"""``LeaderCore``: the one owner of the leader's state, behind an async facade.

Every command that reads or changes leader state (a join, a heartbeat, a task handed out, an
update folded in, a tick) runs on one owner thread, one command after the other, so the
coordinator's state needs no lock and the event loop never waits on one. The servicers
``await core.call(coordinator.method, ...)``; the owner runs it and posts the result back to
the caller's loop.

Slow work runs beside the owner, never inside it:

* store writes: each command's writes leave as one :class:`~eddl.leader.checkpoint.WriteBatch`
  for the :class:`StoreWriter` thread, which commits batches in order; the caller's reply
  waits for its batch (an update is acknowledged once its version is durable; without
  standbys task traffic goes sooner, see below) while the owner already handles the next
  command;
* building a job (its dataset and model) runs in a worker thread (:meth:`LeaderCore.submit_job`),
  and only the light bookkeeping that queues the built job goes through the owner;
* evaluating a version runs on the :class:`~eddl.leader.evaluation.Evaluator` thread, whose
  results come back as commands (:meth:`Coordinator.record_evaluation`) posted to the owner.

Each command's CPU time on the owner thread goes to ``on_command(name, seconds)`` when given
(the leader's metrics: what handing out a task or folding an update costs the leader).

The owner takes every command queued when it wakes (up to :data:`MAX_BATCH`) and sends the
results back in one hop per loop for those that wrote nothing and one for the rest once the
batch's last write is durable: under load, one wake-up of each thread serves many calls.

Domain events (job :class:`~eddl.leader.events.Event`\\ s, node and update signals) are raised
on the owner thread; :meth:`LeaderCore.on_event` hands them to a callback on the loop. Before
the commit, the answers of the long-polls they wake are worked out at the end of the same turn
and go back in the same hop: a woken GetTask makes no second trip through the owner.

Task traffic before the commit (``replies_before_commit``, a leader without standbys): the
replies of :meth:`LeaderCore.call_before_commit` (a task handed out, an update taken) and the
domain events a ``before_commit`` listener hears (the long-polls' wake-ups) go out as soon as
the command ran, beside its commit: a sync round's next tasks leave while the new version is
still being written. A crash before that write loses the version, as it would a moment earlier:
the restarted leader resumes from the last stored version under a new term, refuses every
update of the lost tasks (their term and task ids are the old incarnation's) and hands their
data out again. With standbys replicating, a version a failover could lose is never handed
out: the answer to task traffic waits for every commit made so far, not only its own (a task
asked for while the round's version is being written waits for that write).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from eddl.leader.checkpoint import CheckpointStore, WriteBatch
from eddl.leader.coordinator import Coordinator
from eddl.leader.errors import StoreError
from eddl.leader.evaluation import Evaluator
from eddl.leader.events import DomainEvent, Event, Listener
from eddl.leader.jobs import JobSpec
from eddl.log import get_logger

__all__ = ["LeaderCore", "StoreWriter"]

log = get_logger("leader.core")
# A delivery raised by a command: run ``deliver`` on ``loop`` once the command's writes are in
# (or at once, when it may go before the commit).
_Raised = tuple[asyncio.AbstractEventLoop, Callable[[], None], bool]
P = ParamSpec("P")
T = TypeVar("T")
_Write = tuple[WriteBatch, concurrent.futures.Future[None]]
# A command, the loop of its caller and the future its result settles (None, None: nobody
# waits for it, e.g. an evaluation posted from the evaluator's thread), and whether it is task
# traffic (:meth:`LeaderCore.call_before_commit`).
_Command = tuple[
    Callable[[], Any], asyncio.AbstractEventLoop | None, "asyncio.Future[Any] | None", bool
]
MAX_BATCH = 16  # commands the owner takes from its queue in one turn (replies wait for it)
_Commit = concurrent.futures.Future[None] | None  # a command's writes (None: it wrote none)
_Answer = Callable[[], Callable[[], None] | None]  # see ``LeaderCore.on_event``


class StoreWriter:
    """Commits write batches to ``store`` on its own thread, in submission order.

    Batches that queue up while a commit is running go together in one transaction (a group
    commit), each keeping its own future. When the store refuses a group (a ``StoreError``:
    validated before any write), its batches are committed one by one, so only the refused
    batch fails; any other failure is every batch's of the group. A batch that forgets members or
    changes the leadership record is committed alone: a group applies each kind of write in
    one fixed order, which only keeps the batches' meaning for upserts and appends.
    """

    def __init__(self, store: CheckpointStore, *, max_group: int = 64) -> None:
        self.store = store
        self.max_group = max_group
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="leader-store", daemon=True)
        self._thread.start()

    def submit(self, batch: WriteBatch) -> concurrent.futures.Future[None]:
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._queue.put((batch, done))
        return done

    def close(self) -> None:
        """Wait for every submitted batch, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def commit(self, batch: WriteBatch) -> None:
        """Write ``batch`` in one transaction (a hook for tests that hold or refuse writes)."""
        self.store.commit(batch)

    def _run(self) -> None:
        held: list[_Write | None] = []  # taken from the queue, not written yet
        while True:
            first = held.pop() if held else self._queue.get()
            if first is None:
                return
            group = [first]
            while _groupable(group[-1][0]) and len(group) < self.max_group:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None or not _groupable(item[0]):
                    held.append(item)
                    break
                group.append(item)
            self._write(group)

    def _write(self, group: list[_Write]) -> None:
        if len(group) > 1:
            merged = WriteBatch()
            for batch, _ in group:
                merged.extend(batch)
            try:
                self.commit(merged)
            except StoreError:  # refused before any write: each batch goes alone below
                pass
            except BaseException as exc:  # e.g. the disk or a standby failed: all heard it
                for _, done in group:
                    done.set_exception(exc)
                return
            else:
                for _, done in group:
                    done.set_result(None)
                return
        for batch, done in group:
            try:
                self.commit(batch)
            except BaseException as exc:  # the batch's caller hears why
                done.set_exception(exc)
            else:
                done.set_result(None)


def _groupable(batch: WriteBatch) -> bool:
    return not batch.forget_members and batch.leadership is None


class LeaderCore:
    """The async facade of a :class:`Coordinator` driven by one owner thread."""

    def __init__(
        self,
        coordinator: Coordinator,
        on_command: Callable[[str, float], None] | None = None,
        *,
        replies_before_commit: bool = False,
    ) -> None:
        self.coordinator = coordinator
        self._on_command = on_command
        # Task traffic may leave before its commit (see the module docstring): only where no
        # standby replicates the writes.
        self.replies_before_commit = replies_before_commit
        self._newest: _Commit = None  # the last commit handed to the writer (owner thread)
        self._commands: queue.SimpleQueue[_Command | None] = queue.SimpleQueue()
        # Deliveries raised by the command in progress (owner thread only); they go out once
        # its writes are durable, so a watcher never hears of an event a crash could undo. And
        # the ``answer`` callbacks (see :meth:`on_event`) due at the end of the turn.
        self._raised: list[_Raised] = []
        self._follow: dict[_Answer, asyncio.AbstractEventLoop] = {}
        self._thread = threading.Thread(target=self._own, name="leader-core", daemon=True)
        self._thread.start()
        self.evaluator = Evaluator(
            lambda result: self._commands.put(
                (lambda: coordinator.record_evaluation(result), None, None, False)
            )
        )
        coordinator.evaluate_beside(self.evaluator.submit)

    async def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the owner thread; its writes are durable on return."""
        return await self._call(False, functools.partial(fn, *args, **kwargs))

    async def call_before_commit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run task traffic ``fn(*args, **kwargs)`` on the owner thread. With
        ``replies_before_commit`` the result comes back as soon as it ran, its writes still on
        their way to the store; else once every write made so far is durable (its own and those
        of the commands before it: a task from a version still being written waits for it)."""
        return await self._call(True, functools.partial(fn, *args, **kwargs))

    async def _call(self, task: bool, command: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        self._commands.put((command, loop, done, task))
        return await done

    async def submit_job(self, spec: JobSpec | dict[str, Any]) -> dict[str, Any]:
        """Build the job beside the owner (dataset, model: seconds), then queue it in order."""
        prepared = await asyncio.to_thread(self.coordinator.prepare_job, spec)
        return await self.call(self.coordinator.submit_prepared, prepared)

    async def subscribe(self, job_id: str, listener: Listener) -> Callable[[], None]:
        """Hear ``job_id``'s events on the caller's loop."""
        loop = asyncio.get_running_loop()

        def hop(event: Event) -> None:
            self._raise(loop, lambda: listener(event))

        unsubscribe = await self.call(self.coordinator.subscribe, job_id, hop)
        return lambda: self._post(unsubscribe)

    def on_event(
        self,
        callback: Callable[[DomainEvent], None],
        *,
        before_commit: bool = False,
        answer: _Answer | None = None,
    ) -> Callable[[], None]:
        """``callback`` runs on the current loop after each domain event (long-poll wake-ups):
        once the event's writes are durable, or with ``before_commit`` (and the core's
        ``replies_before_commit``) as soon as its command ran; then ``answer()`` (if given) runs
        on the owner at the end of each turn that raised an event, as task traffic, and what it
        returns runs on the loop after those events, in the same hop (a woken long-poll's answer
        needs no second trip through the owner)."""
        loop = asyncio.get_running_loop()
        early = before_commit and self.replies_before_commit
        follow = answer if early else None

        def hop(event: DomainEvent) -> None:
            self._raise(loop, lambda: callback(event), early=early)
            if follow is not None:
                self._follow[follow] = loop

        return self.coordinator.domain.subscribe(hop)

    def close(self) -> None:
        """Stop the evaluator, finish the commands already posted, then stop the owner."""
        self.evaluator.close()
        self._commands.put(None)
        self._thread.join()

    # -- the owner thread ------------------------------------------------------------------------
    def _raise(
        self, loop: asyncio.AbstractEventLoop, deliver: Callable[[], None], *, early: bool = False
    ) -> None:
        self._raised.append((loop, deliver, early))

    def _post(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the owner without waiting for it (an unsubscribe)."""
        self._commands.put((fn, None, None, False))

    def _own(self) -> None:
        while True:
            # Every command queued by now runs in this turn: under load one wake-up of the
            # owner, and one hop back to each loop per group below, serve many calls.
            batch = [self._commands.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._commands.get_nowait())
                except queue.Empty:
                    break
            # Deliveries of commands that wrote nothing, and those that may go before a commit.
            at_once: list[_Raised] = []
            durable: list[_Raised] = []  # deliveries that wait for the batch's last commit
            last: _Commit = None
            for command in batch:
                if command is None:
                    break
                last = _sort(self._execute(command), at_once, durable, last)
            # The long-polls this turn's events woke get their answers in the same hop.
            follows, self._follow = self._follow, {}
            for answer, loop in follows.items():
                command = (functools.partial(self._hand_out_woken, loop, answer), None, None, True)
                last = _sort(self._execute(command), at_once, durable, last)
            self._follow.clear()  # events of the answers wake the loop's polls as usual
            _deliver(at_once, durable, last)
            if None in batch:
                return

    def _hand_out_woken(self, loop: asyncio.AbstractEventLoop, answer: _Answer) -> None:
        if (deliver := answer()) is not None:
            self._raise(loop, deliver, early=True)

    def _execute(self, command: _Command) -> tuple[_Commit, list[_Raised]]:
        """Run one command; the commit its durable deliveries wait for (None: none) and its
        deliveries."""
        fn, loop, done, task = command
        early = task and self.replies_before_commit
        started = time.thread_time()
        try:
            outcome: tuple[bool, Any] = (True, fn())
        except BaseException as exc:  # handed to the caller, who maps it to a status code
            outcome = (False, exc)
        if self._on_command is not None:
            self._on_command(_name(fn), time.thread_time() - started)
        if done is None and not outcome[0]:
            log.error("leader_command_failed", error=repr(outcome[1]))
        # A refused command changed nothing; whatever a failing one wrote still goes out.
        commit = self.coordinator.take_commit()
        raised, self._raised = self._raised, []
        wait = commit
        if commit is not None:
            self._newest = commit
        elif task and not early and self._newest is not None and not self._newest.done():
            wait = self._newest  # its answer may rest on writes not yet durable
        if early and commit is not None:
            # The reply leaves before the commit: a commit that fails later is only logged
            # (the leader's state moved on, as it does for a command answered after it).
            commit.add_done_callback(functools.partial(_failed_after_reply, _name(fn)))
        if loop is not None and done is not None:
            settled = None if early else commit
            raised.append((loop, functools.partial(_settle, done, outcome, settled), early))
        return wait, raised


def _sort(
    executed: tuple[_Commit, list[_Raised]],
    at_once: list[_Raised],
    durable: list[_Raised],
    last: _Commit,
) -> _Commit:
    """File a command's deliveries; the newest commit so far (the writer commits in order)."""
    wait, raised = executed
    at_once += [r for r in raised if wait is None or r[2]]
    durable += [r for r in raised if wait is not None and not r[2]]
    return last if wait is None else wait


def _deliver(
    at_once: list[_Raised],
    durable: list[_Raised],
    last: _Commit,
) -> None:
    """One hop to each loop for the commands that wrote nothing (and the deliveries that may go
    before a commit), and one once the last commit is in (the writer commits in order, so every
    earlier one is in too): within each hop, replies and events keep the order of the commands,
    events before the reply; a durable one never goes before its writes."""
    if at_once:
        _hop(at_once)
    if durable and last is not None:
        last.add_done_callback(functools.partial(_hop, durable))


def _name(fn: Callable[[], Any]) -> str:
    inner = fn.func if isinstance(fn, functools.partial) else fn
    return str(getattr(inner, "__name__", "command"))


def _hop(raised: list[_Raised], _commit: object = None) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[Callable[[], None]]] = {}
    for loop, deliver, _early in raised:
        by_loop.setdefault(loop, []).append(deliver)
    for loop, delivers in by_loop.items():
        if not loop.is_closed():
            loop.call_soon_threadsafe(_run_all, delivers)


def _run_all(delivers: list[Callable[[], None]]) -> None:
    for deliver in delivers:
        deliver()


def _failed_after_reply(name: str, commit: concurrent.futures.Future[None]) -> None:
    failed = commit.exception()
    if failed is not None:
        log.error("leader_commit_failed_after_reply", command=name, error=repr(failed))


def _settle(
    done: asyncio.Future[Any],
    outcome: tuple[bool, Any],
    commit: concurrent.futures.Future[None] | None,
) -> None:
    if done.done():  # the caller went away (a cancelled RPC)
        return
    ok, value = outcome
    failed = None if commit is None else commit.exception()
    if failed is not None:  # the store refused the writes: the command did not happen
        done.set_exception(failed)
    elif ok:
        done.set_result(value)
    else:
        done.set_exception(value)
