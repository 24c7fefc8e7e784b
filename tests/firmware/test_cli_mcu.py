"""``eddl mcu`` as real processes: start a simulator, ask HELLO, train, stop it cleanly."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

EDDL = [sys.executable, "-m", "eddl.cli"]


def run(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDDL, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def sim_url(sim_exe: object) -> Iterator[str]:
    proc = subprocess.Popen(
        [*EDDL, "mcu", "sim", "--lifetime", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20.0)
        assert ready, "eddl mcu sim printed no URL"
        url = proc.stdout.readline().strip()
        assert url.startswith("socket://127.0.0.1:")
        yield url
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_info_prints_hello(sim_url: str) -> None:
    out = run("mcu", "info", sim_url, "--json")
    assert out.returncode == 0, out.stderr
    hello = json.loads(out.stdout)
    assert hello["board"] == "host-sim" and "tifed" in hello["kernels"]
    human = run("mcu", "info", sim_url)
    assert "max_payload" in human.stdout and "65535" in human.stdout


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["tifed", "tifed-single", "lsgd", "sgd"])
def test_train_prints_accuracy(sim_url: str, algo: str) -> None:
    out = run(
        "mcu",
        "train",
        sim_url,
        "--algo",
        algo,
        "--dataset",
        "digits",
        "--hidden",
        "32",
        "--local-epochs",
        "3",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["algo"] == algo and report["samples"] == 1438 * 3
    assert report["accuracy"] > 0.6  # digits: chance is 0.1
    assert report["kernel_ticks"] > 0


def test_train_lsgd_q8_fine_tunes(sim_url: str) -> None:
    out = run(
        "mcu",
        "train",
        sim_url,
        "--algo",
        "lsgd-q8",
        "--dataset",
        "digits",
        "--hidden",
        "32",
        "--pretrain-samples",
        "200",
        "--local-epochs",
        "2",
        "--lr-shift",
        "5",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["samples"] == (1438 - 200) * 2
    assert report["accuracy"] >= report["accuracy_before"] - 0.02


def test_bad_arguments_and_dead_url_fail_cleanly(sim_exe: object) -> None:
    out = run("mcu", "train", "socket://127.0.0.1:9", "--algo", "nope")
    assert out.returncode == 2 and "invalid choice" in out.stderr
    out = run("mcu", "info", "socket://127.0.0.1:1", "--timeout", "0.2", "--connect-timeout", "0.5")
    assert out.returncode == 1 and "cannot open" in out.stderr
