"""`eddl report` on a real local cluster's state directory: a readable report, or a clear no."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from eddl.cli import main as eddl_main
from eddl.cluster.local import LocalCluster
from eddl.ops.report import write_report
from eddl.ops.run_data import RunDataError, find_store, load_run
from tests.e2e.procs import eddl, status, wait_done, wait_for
from tests.e2e.test_ops_daemons import JOB

PLOTS = ("accuracy", "timeline", "nodes", "versions")
ROUNDS = 100  # long enough for a worker to leave and join again before the job ends


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


@pytest.mark.slow
async def test_report_of_a_local_cluster_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib", reason="the [report] extra is not installed")
    state = tmp_path / "state"
    # Throttled so that the job outlasts a worker's restart (seconds) with a wide margin.
    with LocalCluster(state, [3.0, 4.0]) as cluster:
        cluster.start()
        # The eddl command calls the cluster with its admin certificate.
        monkeypatch.setenv("EDDL_CONFIG_DIR", str(cluster.admin_dir))
        await cluster.wait_for_nodes()
        job = tmp_path / "job.toml"
        job.write_text(JOB.replace("rounds = 40", f"rounds = {ROUNDS}"))
        done = eddl("submit", str(job), "--leader", cluster.address, "--json")
        assert done.returncode == 0, done.stderr
        job_id = json.loads(done.stdout)["job_id"]
        # worker-1 leaves mid-job and comes back: two spans in the job. worker-0 leaves too
        # before worker-1 comes back, so the job waits for them (however slow a start is) and
        # cannot end before both are back: two spans each.
        wait_for(lambda: status(cluster.address)["model_version"] >= 5, 60, "version 5", step=0.2)
        cluster.stop_worker(1)
        wait_for(lambda: status(cluster.address)["model_version"] >= 6, 60, "version 6", step=0.2)
        cluster.stop_worker(0)
        cluster.start_worker(1)
        cluster.start_worker(0)
        for name in ("worker-1", "worker-0"):
            wait_for(lambda n=name: _alive(cluster.address, n), 60, f"{name} back", step=0.2)
        assert wait_done(cluster.address, within=200)["state"] == "completed"
    run = load_run(find_store(state))
    assert run.job_id == job_id and run.status == "completed"
    assert [v.version for v in run.versions] == list(range(1, ROUNDS + 1))
    assert {n.node_id for n in run.nodes} == {"worker-0", "worker-1"}
    assert sum(n.samples for n in run.nodes) == run.versions[-1].samples
    assert all(b.seconds >= a.seconds for a, b in zip(run.versions, run.versions[1:], strict=False))
    for name in ("worker-1", "worker-0"):
        spans = [(p.start, p.end) for p in run.presence if p.node_id == name]
        assert len(spans) == 2 and spans[0][0] == 0.0 and spans[0][1] <= spans[1][0], spans
        assert spans[1][1] == run.duration_s
        node = next(n for n in run.nodes if n.node_id == name)
        assert 0 < node.seconds_in_job < run.duration_s
    assert all((n.samples_per_second or 0) > 0 for n in run.nodes)
    out = tmp_path / "report"
    assert eddl_main(["report", str(state), "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert job_id in page and page.count("data:image/png;base64,") == len(PLOTS)
    for name in PLOTS:
        width, height = _png_size(out / f"{name}.png")
        assert width >= 1000 and height >= 250
        assert (out / f"{name}.png").stat().st_size > 10_000  # drawn, not a blank canvas
    again = write_report(run, tmp_path / "again")
    assert again.html.is_file()
    _screenshot_shows_the_page(out / "index.html", tmp_path / "shot.png")


def _alive(address: str, node: str) -> bool:
    return any(n["node_id"] == node and n["state"] == "alive" for n in status(address)["nodes"])


def _screenshot_shows_the_page(page: Path, shot: Path) -> None:
    """Headless Chromium renders the page: the screenshot is the page's size and not blank."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed: the page was not rendered")
    import matplotlib.image

    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={shot}", "--window-size=1400,4000", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert _png_size(shot) == (1400, 4000)
    pixels = matplotlib.image.imread(shot)[:, :, :3]
    # Text, the embedded plots and their colours: far from one flat colour.
    dark = (pixels.mean(axis=2) < 0.5).mean()
    assert dark > 0.005 and pixels.std() > 0.1, (dark, pixels.std())


def test_report_says_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RunDataError, match="no leader store"):
        find_store(tmp_path)
    assert eddl_main(["report", "no-such-job", "--state-dir", str(tmp_path)]) == 1
    assert "no leader store" in capsys.readouterr().err
