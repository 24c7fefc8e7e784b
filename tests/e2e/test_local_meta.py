"""``eddl local`` runs the shipped TinyMetaFed jobs on a mixed cluster of real processes: a
leader, Python workers and a gateway with two host-simulated microcontrollers (the digits job,
uint8 pixels; the sine job, float32 inputs and regression targets)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.e2e.procs import script

ROOT = Path(__file__).resolve().parents[2]
JOB = ROOT / "docs" / "jobs" / "tinymetafed-digits.toml"
SINE_JOB = ROOT / "docs" / "jobs" / "tinymetafed-sine.toml"


def test_mixed_cluster_runs_the_tinymetafed_job_to_completion(tmp_path: Path) -> None:
    done = subprocess.run(
        [script("eddl"), "local", "--workers", "2", "--mcu", "2", "--job", str(JOB), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "TMPDIR": str(tmp_path), "OPENBLAS_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["state"] == "completed" and result["model_version"] == 30
    assert result["mcus"] == 2
    meta = result["meta"]
    assert meta["algorithm"] == "tinymetafed" and meta["metric"] == "accuracy"
    assert result["accuracy"] == meta["few_shot"] and 0.2 < meta["few_shot"] <= 1.0
    assert meta["uploads"] == meta["sparse_uploads"] == 60  # 2 devices x 30 rounds
    assert meta["upload_bytes_per_device_round"] < 0.2 * meta["dense_model_bytes"]
    # Both kinds of node took device rounds, each holding its own device task.
    work = result["work"]
    mcus = [n for n in work if ".mcu" in n]
    workers = [n for n in work if n.startswith("worker-")]
    assert len(mcus) == 2 and len(workers) == 2, work
    assert sum(w["tasks"] for w in work.values()) == 60
    assert len(set(meta["device_of"].values())) == 4


def test_microcontrollers_take_sine_device_rounds(tmp_path: Path) -> None:
    """Every round samples all three nodes, so both MCUs run the sine inner loop (float32
    samples) in every round, next to one Python worker, and the meta-model learns: its
    few-shot MSE ends well below the untrained model's 4.7 (and a constant 0's 3.8)."""
    done = subprocess.run(
        [script("eddl"), "local", "--workers", "1", "--mcu", "2", "--job", str(SINE_JOB), "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "TMPDIR": str(tmp_path), "OPENBLAS_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["state"] == "completed" and result["model_version"] == 30
    assert result["mcus"] == 2 and result["accuracy"] is None  # sine is scored by MSE
    meta = result["meta"]
    assert meta["task"] == "sine" and meta["metric"] == "mse"
    assert 0.0 < meta["few_shot"] < 3.0  # 2.2 in this job's runs
    assert meta["uploads"] == meta["sparse_uploads"] == 90  # 3 devices x 30 rounds
    assert meta["upload_bytes_per_device_round"] < 0.35 * meta["dense_model_bytes"]
    work = result["work"]
    mcus = {n: w["tasks"] for n, w in work.items() if ".mcu" in n}
    assert mcus == {"gateway.mcu0": 30, "gateway.mcu1": 30}, work
    assert len(set(meta["device_of"].values())) == 3
