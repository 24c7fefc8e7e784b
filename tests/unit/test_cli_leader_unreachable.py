"""Commands that talk to a leader say where they looked when nobody answers, and how to point
them elsewhere (``--leader``, ``$EDDL_CLI_LEADER``). Real gRPC calls to a closed port."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from eddl.cli import main
from eddl.cli.admin_client import DEFAULT_LEADER, LEADER_ENV, leader_error
from tests.ports import free_port

HINT = f"--leader HOST:PORT or {LEADER_ENV}=HOST:PORT"


@pytest.fixture
def closed_address() -> str:
    """127.0.0.1 and a port nothing listens on."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    path = tmp_path / "job.toml"
    path.write_text('[job]\ndataset = "digits"\nalgorithm = "sgd"\nrounds = 1\n')
    return path


def _commands(job_file: Path) -> dict[str, list[str]]:
    return {
        "status": ["status"],
        "watch": ["watch", "job-1"],
        "submit": ["submit", str(job_file)],
        "cancel": ["cancel", "job-1"],
    }


@pytest.mark.parametrize("command", ["status", "watch", "submit", "cancel"])
def test_a_closed_port_names_the_address_and_the_ways_to_change_it(
    command: str,
    closed_address: str,
    job_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(LEADER_ENV, raising=False)
    code = main([*_commands(job_file)[command], "--leader", closed_address])
    err = capsys.readouterr().err
    assert code == 1
    assert f"no leader reachable at {closed_address} (given with --leader)" in err
    assert "UNAVAILABLE" in err and HINT in err
    assert "Traceback" not in err


def test_the_address_from_the_environment_is_named_as_such(
    closed_address: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LEADER_ENV, closed_address)
    assert main(["status"]) == 1
    err = capsys.readouterr().err
    assert f"no leader reachable at {closed_address} (from ${LEADER_ENV})" in err
    assert HINT in err


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def test_the_default_address_is_named_as_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # No live call: 127.0.0.1:50051 may be in use on the machine running the tests.
    monkeypatch.delenv(LEADER_ENV, raising=False)
    down = _rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
    text = leader_error(DEFAULT_LEADER, down)
    assert f"no leader reachable at {DEFAULT_LEADER} (the default)" in text and HINT in text
    late = _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    assert f"no answer from {DEFAULT_LEADER} (the default)" in leader_error(DEFAULT_LEADER, late)


def test_a_refusal_is_reported_as_the_leader_said_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LEADER_ENV, raising=False)
    refused = _rpc_error(grpc.StatusCode.PERMISSION_DENIED, "bad admin token")
    text = leader_error("10.0.0.1:50051", refused)
    assert text == "eddl: leader refused: PERMISSION_DENIED: bad admin token"
