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
