"""GetTask long-polls waiting on the serving loop, answered together after each domain event.

A worker with nothing to do waits in ``GetTask`` until something changes (a new version, a
re-queued range, a node joining or leaving). Asking the owner again once per waiting call
would cost one command each - ``n`` owner round trips in a row when a sync round closes, the
last worker hearing of the new version ``n`` round trips late. :class:`LongPolls` instead asks
the owner for every waiting call in **one** command (``ask_many``) after each domain event.

Lost wake-ups: an event delivered between the moment a call asked the owner and the moment it
starts waiting would find nobody to wake. :attr:`LongPolls.generation` counts the events seen
on the loop; a call that waits after an event it may have missed is asked again at once.

Sooner still, the owner's turn that raised the event answers the calls waiting then
(:meth:`LongPolls.answer_beside`, on the owner thread) and its hop to the loop hands the answers
over right after the event: a woken call makes no second trip through the owner. Calls that
began to wait after that turn are asked by ``ask_many`` as above.

Everything else here runs on the serving loop; the owner's state is only read on the owner.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["LongPolls"]

Ask = TypeVar("Ask")
Answer = TypeVar("Answer")
# One answer per ask: the outcome, or the error the ask alone raised.
Answers = list["Answer | BaseException"]


@dataclass(eq=False)
class _Poll(Generic[Ask, Answer]):
    ask: Ask
    answer: asyncio.Future[tuple[Answer, int]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class LongPolls(Generic[Ask, Answer]):
    """Waiting calls, woken by :meth:`wake` and answered by one ``ask_many`` command."""

    def __init__(
        self,
        ask_many: Callable[[Sequence[Ask]], Awaitable[Sequence[Answer | BaseException]]],
    ) -> None:
        self._ask_many = ask_many
        self._waiting: dict[_Poll[Ask, Answer], None] = {}  # in arrival order
        self._answering: asyncio.Task[None] | None = None
        self._again = False
        self.generation = 0  # domain events seen on the loop
        self.batches = 0  # ask_many commands sent (each answers every call then waiting)

    def __len__(self) -> int:
        return len(self._waiting)

    def wake(self) -> None:
        """A domain event arrived: ask again for every waiting call, in one command."""
        self.generation += 1
        self._answer_soon()

    async def wait(self, ask: Ask, seconds: float, *, since: int) -> tuple[Answer, int] | None:
        """Wait up to ``seconds`` for a wake-up and the answer to ``ask`` (with the generation
        it was asked at); ``None`` when nothing happened. ``since``: the generation at which
        the caller last asked, so an event it may have missed makes it ask again at once."""
        poll: _Poll[Ask, Answer] = _Poll(ask)
        self._waiting[poll] = None
        if since != self.generation:
            self._answer_soon()
        try:
            # On a timeout (or a cancelled call) the answer is cancelled: a command in flight
            # that still asks for it drops its answer.
            async with asyncio.timeout(seconds):
                return await poll.answer
        except TimeoutError:
            return None
        finally:
            self._waiting.pop(poll, None)

    def answer_beside(
        self, answer_each: Callable[[Sequence[Ask]], Sequence[Answer | BaseException]]
    ) -> Callable[[], None] | None:
        """On the owner thread, after a command that raised an event: ``answer_each`` answers
        the calls waiting now; returns what hands the answers over on the loop (after that
        event), or ``None`` when nobody waits."""
        # One C-level copy under the GIL (the keys hash by identity, no Python code runs): the
        # loop may change the dict meanwhile.
        polls = tuple(self._waiting.copy())
        if not polls:
            return None
        answers = answer_each([p.ask for p in polls])
        return functools.partial(self._hand_over, polls, answers)

    def _hand_over(
        self, polls: Sequence[_Poll[Ask, Answer]], answers: Sequence[Answer | BaseException]
    ) -> None:
        """On the loop, right after the event the answers followed (counted in ``generation``)."""
        for poll, answer in zip(polls, answers, strict=True):
            self._waiting.pop(poll, None)
            _settle(poll, answer, self.generation)

    def _answer_soon(self) -> None:
        if not self._waiting:
            return
        if self._answering is not None:
            self._again = True  # asked again once the command in flight is back
            return
        self._answering = asyncio.get_running_loop().create_task(self._answer())

    async def _answer(self) -> None:
        try:
            while self._waiting:
                self._again = False
                polls = list(self._waiting)
                self._waiting.clear()
                generation = self.generation
                self.batches += 1
                try:
                    answers = await self._ask_many([p.ask for p in polls])
                except Exception as exc:  # the whole command failed: each caller hears it
                    for poll in polls:
                        if not poll.answer.done():
                            poll.answer.set_exception(exc)
                    return
                for poll, answer in zip(polls, answers, strict=True):
                    _settle(poll, answer, generation)
                if not self._again:
                    break
                # Let the answered calls reply, or wait again, before the next command.
                await asyncio.sleep(0)
        finally:
            self._answering = None


def _settle(poll: _Poll[Ask, Answer], answer: Answer | BaseException, generation: int) -> None:
    """Give ``poll`` its answer (an exception: its refusal), unless it already has one (timed
    out, cancelled, or answered the other way)."""
    if poll.answer.done():
        return
    if isinstance(answer, BaseException):
        poll.answer.set_exception(answer)
    else:
        poll.answer.set_result((answer, generation))
