"""The daemons are secure by default: mTLS unless --insecure, which is loopback only."""

from __future__ import annotations

from pathlib import Path

import pytest

from eddl.config import ConfigError
from eddl.leader.config import LeaderConfig
from eddl.leader.main import build_parser
from eddl.leader.main import main as leader_main
from eddl.worker.main import main as worker_main


def test_the_leader_runs_mtls_by_default_and_needs_no_join_token() -> None:
    config = LeaderConfig()
    assert config.security == "mtls"
    assert build_parser().parse_args([]).security is None  # the config's default applies


@pytest.mark.parametrize("bind", ["0.0.0.0:50051", "10.0.0.1:50051", "[::]:50051"])
def test_insecure_binds_to_loopback_only(bind: str) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        LeaderConfig(bind=bind, security="insecure", join_token="t")
    assert LeaderConfig(bind="127.0.0.1:0", security="insecure", join_token="t")


def test_insecure_needs_the_join_token() -> None:
    with pytest.raises(ConfigError, match="join_token"):
        LeaderConfig(bind="127.0.0.1:0", security="insecure")


def test_the_plaintext_test_mode_is_refused_to_the_daemons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EDDL_LEADER_SECURITY", "off")
    monkeypatch.setenv("EDDL_LEADER_JOIN_TOKEN", "t")
    assert leader_main(["--state-dir", str(tmp_path / "s")]) == 2
    monkeypatch.setenv("EDDL_WORKER_SECURITY", "off")
    assert worker_main([]) == 2
    assert "mtls, or insecure" in capsys.readouterr().err
