"""Fuzzing every RPC of a real leader process: 5,000 seeded hostile messages, half drawn by
hypothesis from the request messages, half byte-mutated valid requests (``bench.fuzzing``).

No call may end UNKNOWN or INTERNAL, the leader must stay up, and its state (model version and
parameters, members, jobs) must be what it was. The corpus does not know the join or admin
token, so no legitimate call can change that state either. The benchmark run of 100,000
messages is ``python -m bench.fuzz`` (docs/reliability.md).
"""

from __future__ import annotations

from pathlib import Path

from bench.fuzzing import Hints, by_method, corpus, rpcs
from bench.fuzztarget import FuzzLeader, leader_state, send_all

MESSAGES = 5000
SEED = 14


async def test_fuzzed_rpcs_never_fail_internally_nor_change_state(tmp_path: Path) -> None:
    leader = FuzzLeader(tmp_path)
    try:
        await leader.start()
        calls = corpus(MESSAGES, Hints(job_id=leader.job_id), SEED)
        assert len(calls) == MESSAGES
        assert set(by_method(calls)) == {rpc.name for rpc in rpcs()}
        assert {call.origin for call in calls} == {"structured", "mutated"}
        before = await leader_state(leader.address, leader.job_id, leader.metadata)
        result = await send_all(
            leader.address, calls, concurrency=16, deadline_s=1.0, metadata=leader.metadata
        )
        assert result.sent == MESSAGES
        assert result.bad == [], result.bad[:10]
        assert leader.alive(), leader.log_text()[-3000:]
        after = await leader_state(leader.address, leader.job_id, leader.metadata)
        assert after == before
        # The corpus reached past the first checks: some calls were answered, some refused.
        codes = {key.split()[1] for key in result.codes}
        assert {"OK", "INVALID_ARGUMENT", "UNAUTHENTICATED", "NOT_FOUND"} <= codes
    finally:
        leader.stop()
    assert "unexpected error" not in leader.log_text()
