"""`eddl report` on a real local cluster's state directory: a readable report, or a clear no."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from eddl.cli import main as eddl_main
from eddl.cluster.local import LocalCluster
from eddl.ops.report import write_report
from eddl.ops.run_data import RunDataError, find_store, load_run
from tests.e2e.procs import wait_done
from tests.e2e.test_ops_daemons import submit


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


@pytest.mark.slow
async def test_report_of_a_local_cluster_run(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the [report] extra is not installed")
    state = tmp_path / "state"
    with LocalCluster(state, [1.0, 2.0]) as cluster:
        cluster.start()
        await cluster.wait_for_nodes()
        job_id = submit(tmp_path, cluster.address)
        assert wait_done(cluster.address, within=150)["state"] == "completed"
    run = load_run(find_store(state))
    assert run.job_id == job_id and run.status == "completed"
    assert [v.version for v in run.versions] == list(range(1, 41))
    assert {n.node_id for n in run.nodes} == {"worker-0", "worker-1"}
    assert sum(n.samples for n in run.nodes) == run.versions[-1].samples
    assert all(b.seconds >= a.seconds for a, b in zip(run.versions, run.versions[1:], strict=False))
    out = tmp_path / "report"
    assert eddl_main(["report", str(state), "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert job_id in page and page.count("data:image/png;base64,") == 3
    for name in ("accuracy", "nodes", "versions"):
        width, height = _png_size(out / f"{name}.png")
        assert width >= 1000 and height >= 250
        assert (out / f"{name}.png").stat().st_size > 10_000  # drawn, not a blank canvas
    again = write_report(run, tmp_path / "again")
    assert again.html.is_file()


def test_report_says_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RunDataError, match="no leader store"):
        find_store(tmp_path)
    assert eddl_main(["report", "no-such-job", "--state-dir", str(tmp_path)]) == 1
    assert "no leader store" in capsys.readouterr().err
