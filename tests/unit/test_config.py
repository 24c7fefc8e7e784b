from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from eddl.config import ConfigError, load_config


@dataclass(frozen=True)
class Sample:
    port: int = 0
    rate: float = 1.0
    name: str = "a"
    debug: bool = False
    mode: Literal["sync", "async", "auto"] = "auto"
    leaders: list[str] = field(default_factory=list)
    state_dir: Path | None = None


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('[sample]\nport = 10\nname = "file"\nleaders = ["h:1"]\n')
    env = {"EDDL_SAMPLE_NAME": "env", "EDDL_SAMPLE_RATE": "2.5", "EDDL_SAMPLE_DEBUG": "yes"}
    cfg = load_config(Sample, "sample", cfg_file, {"port": 99, "mode": None}, environ=env)
    assert cfg == Sample(port=99, rate=2.5, name="env", debug=True, leaders=["h:1"])


def test_env_lists_and_paths() -> None:
    env = {"EDDL_SAMPLE_LEADERS": "a:1, b:2", "EDDL_SAMPLE_STATE_DIR": "/var/lib/eddl"}
    cfg = load_config(Sample, "sample", environ=env)
    assert cfg.leaders == ["a:1", "b:2"] and cfg.state_dir == Path("/var/lib/eddl")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[sample]\nprot = 1\n", "unknown key"),
        ("[sample]\nport = 'x'\n", "integer"),
        ("[sample]\nport = true\n", "integer"),
        ("[sample]\nmode = 'fast'\n", "not one of"),
        ("[other]\nport = 1\n", "unknown table"),
        ("[sample\n", "config file"),
    ],
)
def test_bad_files_are_refused(tmp_path: Path, toml: str, message: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_config(Sample, "sample", p, environ={})


def test_unknown_env_variable_and_missing_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="EDDL_SAMPLE_PORTT"):
        load_config(Sample, "sample", environ={"EDDL_SAMPLE_PORTT": "1"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Sample, "sample", tmp_path / "none.toml", environ={})


@pytest.mark.parametrize("bad", ["host", ":80", "host:", "host:http", "host:70000"])
def test_check_address_refuses_what_is_not_host_port(bad: str) -> None:
    from eddl.config import check_address

    with pytest.raises(ConfigError, match="not HOST:PORT"):
        check_address(bad, "x.bind")
    check_address("127.0.0.1:0", "x.bind")
    check_address("[::1]:50051", "x.bind")


def test_the_leader_link_capacity_is_a_finite_non_negative_rate() -> None:
    from eddl.leader.config import LeaderConfig
    from eddl.leader.main import _overrides, build_parser

    args = build_parser().parse_args(["--link-capacity-mbps", "100"])
    assert _overrides(args)["link_capacity_mbps"] == 100.0
    assert LeaderConfig(link_capacity_mbps=100.0).link_capacity_mbps == 100.0
    for bad in (-1.0, float("nan"), float("inf"), 2e6):
        with pytest.raises(ConfigError, match="link_capacity_mbps"):
            LeaderConfig(link_capacity_mbps=bad)


def test_the_leader_link_interface_needs_a_capacity_and_an_interface_name() -> None:
    from eddl.leader.config import LeaderConfig
    from eddl.leader.main import _overrides, build_parser

    args = build_parser().parse_args(["--link-interface", "eth0", "--link-capacity-mbps", "20"])
    assert _overrides(args)["link_interface"] == "eth0"
    assert LeaderConfig(link_interface="veth-r0", link_capacity_mbps=20.0).link_interface
    with pytest.raises(ConfigError, match=r"needs leader\.link_capacity_mbps"):
        LeaderConfig(link_interface="eth0")
    for bad in ("eth 0", "a" * 16, "../x", "eth0\n"):
        with pytest.raises(ConfigError, match="not a network interface's name"):
            LeaderConfig(link_interface=bad, link_capacity_mbps=20.0)


def test_the_split_settings_are_refused_out_of_range() -> None:
    from eddl.leader.config import LeaderConfig

    assert LeaderConfig(split="auto", split_hold_s=3.0).split == "auto"
    with pytest.raises(ConfigError, match="split must be advise or auto"):
        LeaderConfig(split="always")
    for name in ("split_hold_s", "split_busy_for_s"):
        for bad in (-1.0, float("nan"), float("inf"), 86401.0):
            with pytest.raises(ConfigError, match=name):
                LeaderConfig(**{name: bad})
    assert LeaderConfig(split_window_s=5.0).split_window_s == 5.0
    for bad in (0.0, -1.0, float("nan"), float("inf"), 86401.0):
        with pytest.raises(ConfigError, match="split_window_s"):
            LeaderConfig(split_window_s=bad)


def test_can_lead_needs_an_address_a_fixed_port_over_mtls_and_no_mcu() -> None:
    from eddl.worker.config import WorkerConfig

    ok = WorkerConfig(security="insecure", can_lead="127.0.0.1:0")
    assert ok.can_lead == "127.0.0.1:0" and WorkerConfig().can_lead == ""
    assert WorkerConfig(security="mtls", can_lead="127.0.0.1:7100").can_lead == "127.0.0.1:7100"
    with pytest.raises(ConfigError, match="can_lead"):
        WorkerConfig(security="insecure", can_lead="no-port")
    with pytest.raises(ConfigError, match=r"can_lead: over mTLS .* fixed port"):
        WorkerConfig(security="mtls", can_lead="127.0.0.1:0")
    with pytest.raises(ConfigError, match="can_lead: a gateway"):
        WorkerConfig(security="off", can_lead="127.0.0.1:7100")
