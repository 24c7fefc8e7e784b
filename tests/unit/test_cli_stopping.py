"""eddl.cli.stopping: stop signals sent to this very process, handled as ``eddl local`` does."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from eddl.cli.stopping import STOP_SIGNALS, StopOnSignals, Stopped


def _deliver(sig: signal.Signals) -> None:
    """Send ``sig`` to this process and give its handler the bytecodes it needs to run."""
    os.kill(os.getpid(), sig)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.mark.parametrize("sig", STOP_SIGNALS, ids=str)
def test_a_signal_raises_stopped_in_the_main_thread(sig: signal.Signals) -> None:
    with StopOnSignals() as stopper, pytest.raises(Stopped) as caught:
        _deliver(sig)
    assert caught.value.signum == sig == stopper.signum


def test_while_a_loop_runs_the_signal_cancels_its_main_task() -> None:
    reached_end = False

    async def main(stopper: StopOnSignals) -> None:
        nonlocal reached_end
        task = asyncio.current_task()
        assert task is not None
        with stopper.cancelling(task):
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(5)
            reached_end = True

    with StopOnSignals() as stopper:
        with pytest.raises(asyncio.CancelledError):
            asyncio.run(main(stopper))
        assert stopper.signum == signal.SIGTERM and not reached_end
        with pytest.raises(Stopped):
            stopper.check()


def test_during_cleanup_a_signal_is_only_recorded_and_a_second_one_ignored() -> None:
    with StopOnSignals() as stopper:
        with stopper.deferred():
            os.kill(os.getpid(), signal.SIGHUP)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
        assert stopper.signum == signal.SIGHUP
        with pytest.raises(Stopped) as caught:
            stopper.check()
        assert caught.value.signum == signal.SIGHUP


def test_the_previous_handlers_come_back() -> None:
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    with StopOnSignals():
        assert all(signal.getsignal(sig) != before[sig] for sig in STOP_SIGNALS)
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before


def test_held_signals_wait_until_released() -> None:
    with StopOnSignals() as stopper:
        # Raised at the release, not inside the held block.
        with pytest.raises(Stopped), stopper.held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            assert stopper.signum is None
        assert stopper.signum == signal.SIGTERM
