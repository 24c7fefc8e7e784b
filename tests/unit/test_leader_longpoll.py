"""Waiting GetTask calls are asked again together, in one command, after each domain event."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from eddl.leader.errors import UnknownNodeError
from eddl.leader.longpoll import LongPolls

WAIT_S = 5.0  # generous: each wait below ends as soon as the answer it waits for arrives


class Owner:
    """Stands for the owner's ``ask_many`` command: answers each ask, records each batch."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate: asyncio.Event | None = None

    async def ask_many(self, asks: Sequence[str]) -> list[str | BaseException]:
        self.batches.append(list(asks))
        if self.gate is not None:
            await asyncio.wait_for(self.gate.wait(), WAIT_S)
        return [
            UnknownNodeError(f"{a} has not joined") if a == "stranger" else a.upper() for a in asks
        ]


async def test_one_event_answers_every_waiting_call_in_one_command() -> None:
    owner = Owner()
    polls: LongPolls[str, str] = LongPolls(owner.ask_many)
    waits = [asyncio.create_task(polls.wait(a, WAIT_S, since=0)) for a in ("w0", "w1", "w2")]
    await asyncio.sleep(0)
    assert len(polls) == 3 and owner.batches == []  # nothing happened yet: nobody asked
    polls.wake()
    answers = await asyncio.gather(*waits)
    assert answers == [("W0", 1), ("W1", 1), ("W2", 1)]  # asked at generation 1
    assert owner.batches == [["w0", "w1", "w2"]] and len(polls) == 0


async def test_a_call_hears_its_own_refusal_and_the_others_their_answers() -> None:
    owner = Owner()
    polls: LongPolls[str, str] = LongPolls(owner.ask_many)
    waits = [asyncio.create_task(polls.wait(a, WAIT_S, since=0)) for a in ("w0", "stranger")]
    await asyncio.sleep(0)
    polls.wake()
    assert await waits[0] == ("W0", 1)
    with pytest.raises(UnknownNodeError, match="stranger"):
        await waits[1]


async def test_a_call_that_may_have_missed_an_event_is_asked_again_at_once() -> None:
    owner = Owner()
    polls: LongPolls[str, str] = LongPolls(owner.ask_many)
    polls.wake()  # an event while the call was asking the owner (nobody waited yet)
    assert owner.batches == []
    assert await polls.wait("w0", WAIT_S, since=0) == ("W0", 1)


async def test_a_call_with_nothing_happening_times_out_and_is_not_answered_later() -> None:
    owner = Owner()
    polls: LongPolls[str, str] = LongPolls(owner.ask_many)
    assert await polls.wait("w0", 0.01, since=0) is None
    assert len(polls) == 0
    polls.wake()
    await asyncio.sleep(0)
    assert owner.batches == []  # nobody waits any more


async def test_events_during_a_command_in_flight_ask_the_new_waiters_once_it_is_back() -> None:
    owner = Owner()
    owner.gate = asyncio.Event()
    polls: LongPolls[str, str] = LongPolls(owner.ask_many)
    first = asyncio.create_task(polls.wait("w0", WAIT_S, since=0))
    await asyncio.sleep(0)
    polls.wake()
    await asyncio.sleep(0)
    assert owner.batches == [["w0"]]  # in flight, held at the gate
    second = asyncio.create_task(polls.wait("w1", WAIT_S, since=polls.generation))
    third = asyncio.create_task(polls.wait("w2", WAIT_S, since=polls.generation))
    await asyncio.sleep(0)
    polls.wake()  # w1 and w2 wait for the command in flight to come back
    assert owner.batches == [["w0"]]
    owner.gate.set()
    assert await first == ("W0", 1)
    assert await asyncio.gather(second, third) == [("W1", 2), ("W2", 2)]
    assert owner.batches == [["w0"], ["w1", "w2"]]


async def test_a_failed_command_fails_each_call_it_asked_for() -> None:
    async def broken(asks: Sequence[str]) -> list[str | BaseException]:
        raise RuntimeError("owner stopped")

    polls: LongPolls[str, str] = LongPolls(broken)
    waiting = asyncio.create_task(polls.wait("w0", WAIT_S, since=0))
    await asyncio.sleep(0)
    polls.wake()
    with pytest.raises(RuntimeError, match="owner stopped"):
        await waiting


async def test_calls_answered_on_the_owner_need_no_command_and_later_ones_are_asked() -> None:
    owner = Owner()
    polls: LongPolls[str, str] = LongPolls(owner.ask_many)
    assert polls.answer_beside(lambda asks: [a.upper() for a in asks]) is None  # nobody waits
    first = asyncio.create_task(polls.wait("w0", WAIT_S, since=0))
    await asyncio.sleep(0)
    # The owner's turn that raised an event answers the call waiting then, on its own thread.
    hand_over = await asyncio.to_thread(polls.answer_beside, lambda asks: [a.upper() for a in asks])
    assert hand_over is not None and not first.done()
    late = asyncio.create_task(polls.wait("w1", WAIT_S, since=0))  # began after that turn
    await asyncio.sleep(0)
    polls.wake()  # the event, then the answers, in one hop
    hand_over()
    assert await first == ("W0", 1)
    assert await late == ("W1", 1)
    assert owner.batches == [["w1"]] and len(polls) == 0  # w0 was never asked again
