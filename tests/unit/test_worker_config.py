"""WorkerConfig refuses bad settings with a clear error (from TOML, env or flags alike)."""

from __future__ import annotations

from pathlib import Path

import pytest

from eddl.config import ConfigError, load_config
from eddl.worker.config import WorkerConfig


def test_defaults_are_valid_and_serve_a_local_endpoint() -> None:
    config = WorkerConfig()
    assert config.bind == "127.0.0.1:0" and config.leaders


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"leaders": []}, "at least one leader"),
        ({"leaders": ["no-port"]}, "not HOST:PORT"),
        ({"bind": "localhost"}, "worker.bind"),
        ({"bind": ":50061"}, "worker.bind"),
        ({"node_id": "has space"}, "node_id"),
        ({"throttle": 0.5}, "throttle"),
        ({"throttle": float("inf")}, "throttle"),
        ({"chunk_bytes": 10}, "chunk_bytes"),
        ({"backoff_initial_s": 9.0, "backoff_max_s": 1.0}, "backoff"),
        ({"mcu": ["/dev/ttyACM0", "/dev/ttyACM0"]}, "listed twice"),
        ({"mcu": ["has space"]}, "not a serial URL"),
        ({"mcu": [""]}, "not a serial URL"),
        ({"mcu": ["/dev/a/mcu-0", "/dev/b/mcu-0"]}, "share a node name"),
        ({"mcu_baud": 0}, "mcu_baud"),
        ({"mcu_reply_timeout_s": float("nan")}, "mcu_reply_timeout_s"),
        ({"mcu_train_timeout_s": -1.0}, "mcu_train_timeout_s"),
        ({"mcu_retry_s": 0.0}, "mcu_retry_s"),
        ({"mcu_max_buffer": 0}, "mcu_max_buffer"),
        ({"mcu_max_buffer": 70_000}, "mcu_max_buffer"),
    ],
)
def test_bad_settings_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WorkerConfig(**overrides)  # type: ignore[arg-type]


def test_empty_bind_disables_the_endpoint_and_env_reaches_it(tmp_path: Path) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text('[worker]\nleaders = ["a:1"]\nbind = ""\n')
    assert load_config(WorkerConfig, "worker", cfg, environ={}).bind == ""
    env = {"EDDL_WORKER_BIND": "0.0.0.0:50061", "EDDL_WORKER_PORT_FILE": "/run/eddl/w.port"}
    config = load_config(WorkerConfig, "worker", cfg, environ=env)
    assert config.bind == "0.0.0.0:50061" and config.port_file == "/run/eddl/w.port"


def test_mcu_devices_get_stable_node_ids() -> None:
    config = WorkerConfig(
        node_id="pi1", mcu=["/dev/eddl/mcu-A1B2", "socket://127.0.0.1:4000", "/dev/pts/3"]
    )
    assert config.mcu_node_ids() == ["pi1.mcu-A1B2", "pi1.mcu1", "pi1.mcu2"]


def test_mcu_list_comes_from_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[worker]\nmcu = ["/dev/eddl/mcu-uart0"]\nmcu_verify = true\n')
    loaded = load_config(WorkerConfig, "worker", cfg, environ={})
    assert loaded.mcu == ["/dev/eddl/mcu-uart0"] and loaded.mcu_verify
    with pytest.raises(ConfigError):
        cfg.write_text('[worker]\nmcu = ["/dev/x"]\nmcu_bogus = 1\n')
        load_config(WorkerConfig, "worker", cfg, environ={})
