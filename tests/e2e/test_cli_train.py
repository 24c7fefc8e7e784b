"""``eddl train`` as a person runs it: a real process, shipped data."""

from __future__ import annotations

import json
import subprocess
import sys


def _eddl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eddl.cli", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_train_json_reports_the_agreed_fields() -> None:
    proc = _eddl(
        "train",
        "--algo",
        "lsgd",
        "--dataset",
        "digits",
        "--clients",
        "4",
        "--rounds",
        "3",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for key in ("algo", "dataset", "clients", "rounds", "accuracy", "train_state_bytes", "seconds"):
        assert key in out
    assert out["algo"] == "lsgd" and out["clients"] == 4 and out["rounds"] == 3
    assert out["accuracy"] > 0.8


def test_train_prints_a_summary_table() -> None:
    proc = _eddl("train", "--algo", "tifed", "--dataset", "digits", "--rounds", "1")
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout and "tifed on digits" in proc.stdout


def test_train_refuses_bad_flags_with_a_clear_message() -> None:
    proc = _eddl("train", "--partition", "dirichlet:-1")
    assert proc.returncode == 2 and "dirichlet alpha" in proc.stderr
    proc = _eddl("train", "--clients", "0")
    assert proc.returncode == 2 and "clients must be >= 1" in proc.stderr
    proc = _eddl("train", "--algo", "tifed", "--lr-inv", "0", "--rounds", "1")
    assert proc.returncode == 2 and "lr_inv" in proc.stderr
