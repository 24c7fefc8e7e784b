"""``eddl report``: a static HTML report of one job, PNG plots by matplotlib (extra ``[report]``).

Writes into one folder: ``accuracy.png`` (test accuracy against time and against samples
trained, each model version a point, policy switches and leader restarts marked),
``nodes.png`` (samples, tasks and samples per second of each node), ``timeline.png`` (when each
node was in the job, with the model versions, policy switches and leader restarts on the same
time axis), ``versions.png`` (time between consecutive model versions: how long the cluster took
to make each update of the model) and ``index.html``, which shows the same PNGs embedded, so
the page can be mailed as one file. What the leader's store does not hold (task start and end
times, bytes on the wire, devices' serial time) is not drawn: the page says where to find it.
"""

from __future__ import annotations

import base64
import html
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eddl.ops.run_data import RunData

__all__ = ["MISSING_MATPLOTLIB", "Report", "ReportError", "matplotlib_available", "write_report"]

MISSING_MATPLOTLIB = (
    "eddl report draws its plots with matplotlib, which is not installed; "
    "install the extra: pip install 'eddl[report]'"
)
_MODE_COLOURS = {"sync": "#1f77b4", "async": "#ff7f0e"}


_NOT_STORED = (
    "The leader's store keeps model versions, membership and policy events and each node's "
    "tasks and samples, not when each task started and ended, the bytes on the wire or a "
    "microcontroller's serial time against its training time. Those are the daemons' "
    "Prometheus metrics (eddl_worker_task_seconds, eddl_leader_received_bytes_total, "
    "eddl_mcu_serial_seconds_total; see docs/operations.md)."
)


class ReportError(RuntimeError):
    """The report cannot be drawn (matplotlib missing, nothing to plot)."""


@dataclass(frozen=True)
class Report:
    folder: Path
    html: Path
    images: tuple[Path, ...]


def matplotlib_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot() -> Any:
    if not matplotlib_available():
        raise ReportError(MISSING_MATPLOTLIB)
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def _marks(ax: Any, run: RunData, *, on_samples: bool = False) -> None:
    """Policy switches (dashed, coloured by the new mode) and leader restarts (dotted)."""
    for s in run.switches:
        x = _samples_at(run, s.seconds) if on_samples else s.seconds
        ax.axvline(x, color=_MODE_COLOURS.get(s.mode, "grey"), linestyle="--", linewidth=1.2)
        ax.annotate(f"→ {s.mode}", (x, 0.02), xycoords=("data", "axes fraction"),
                    rotation=90, fontsize=8, ha="right", va="bottom")  # fmt: skip
    for t in run.resumes:
        x = _samples_at(run, t) if on_samples else t
        ax.axvline(x, color="black", linestyle=":", linewidth=1.2)
        ax.annotate("leader restart", (x, 0.02), xycoords=("data", "axes fraction"),
                    rotation=90, fontsize=8, ha="right", va="bottom")  # fmt: skip


def _samples_at(run: RunData, seconds: float) -> float:
    before = [v.samples for v in run.versions if v.seconds <= seconds]
    return float(before[-1]) if before else 0.0


def _accuracy_plot(plt: Any, run: RunData, path: Path) -> None:
    fig, (by_time, by_samples) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    points = [v for v in run.versions if v.accuracy is not None]
    for mode, colour in _MODE_COLOURS.items():
        mine = [v for v in points if v.mode == mode]
        if mine:
            by_time.scatter([v.seconds for v in mine], [v.accuracy for v in mine], s=14,
                            color=colour, label=f"{mode} versions", zorder=3)  # fmt: skip
            by_samples.scatter([v.samples for v in mine], [v.accuracy for v in mine], s=14,
                               color=colour, label=f"{mode} versions", zorder=3)  # fmt: skip
    by_time.plot([v.seconds for v in points], [v.accuracy for v in points], color="grey",
                 linewidth=0.8, zorder=2)  # fmt: skip
    by_samples.plot([v.samples for v in points], [v.accuracy for v in points], color="grey",
                    linewidth=0.8, zorder=2)  # fmt: skip
    target = run.spec.get("target_accuracy")
    for ax, xlabel in ((by_time, "seconds since the job started"), (by_samples, "samples trained")):
        if target is not None:
            ax.axhline(float(target), color="green", linewidth=0.8, label=f"target {target}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    _marks(by_time, run)
    _marks(by_samples, run, on_samples=True)
    by_time.set_title("Accuracy over time")
    by_samples.set_title("Accuracy over samples trained")
    by_time.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Job {run.job_id} ({run.status})")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _nodes_plot(plt: Any, run: RunData, path: Path) -> None:
    nodes = run.nodes
    height = max(2.5, 0.45 * len(nodes) + 1.5)
    fig, (samples, tasks, speed) = plt.subplots(1, 3, figsize=(13, height), constrained_layout=True)
    names = [n.node_id for n in nodes]
    samples.barh(names, [n.samples for n in nodes], color="#1f77b4")
    tasks.barh(names, [n.tasks for n in nodes], color="#2ca02c")
    speed.barh(names, [n.samples_per_second or 0.0 for n in nodes], color="#9467bd")
    samples.set_xlabel("samples trained")
    tasks.set_xlabel("tasks done")
    speed.set_xlabel("samples taken in per second in the job")
    samples.set_title("Samples per node")
    tasks.set_title("Tasks per node")
    speed.set_title("Samples/s per node (waits included)")
    speed.tick_params(labelleft=False)
    tasks.tick_params(labelleft=False)
    for ax in (samples, tasks, speed):
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    if not nodes:
        samples.text(0.5, 0.5, "no node trained", transform=samples.transAxes, ha="center")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _timeline_plot(plt: Any, run: RunData, path: Path) -> None:
    names = sorted({p.node_id for p in run.presence})
    height = max(2.8, 0.4 * len(names) + 2.0)
    fig, ax = plt.subplots(figsize=(12, height), constrained_layout=True)
    for row, name in enumerate(names):
        spans = [(p.start, max(p.end - p.start, 1e-3)) for p in run.presence if p.node_id == name]
        ax.broken_barh(spans, (row - 0.35, 0.7), color="#8c9fb8")
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(len(names) - 0.5 if names else 0.5, -1.5)
    ax.scatter([v.seconds for v in run.versions], [-1] * len(run.versions), marker="|", s=80,
               color=[_MODE_COLOURS.get(v.mode, "grey") for v in run.versions])  # fmt: skip
    ax.annotate("model versions", (0, -1), xytext=(2, 6), textcoords="offset points", fontsize=8)
    _marks(ax, run)
    ax.set_xlim(0, max(run.duration_s, 1e-3) * 1.01)
    ax.set_xlabel("seconds since the job started")
    ax.set_title("Nodes in the job (from join, leave and expiry events) and model versions")
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _versions_plot(plt: Any, run: RunData, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(12, 4), constrained_layout=True)
    for mode, colour in _MODE_COLOURS.items():
        mine = [v for v in run.versions if v.mode == mode]
        if mine:
            ax.bar([v.version for v in mine], [v.interval_s for v in mine], color=colour,
                   label=f"{mode}", width=0.9)  # fmt: skip
    ax.set_xlabel("model version")
    ax.set_ylabel("seconds since the previous version")
    ax.set_title("Time to make each model version")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _summary(run: RunData) -> list[tuple[str, str]]:
    acc = run.final_accuracy
    rows = [
        ("job", run.job_id),
        ("state", run.status),
        ("why it ended", str(run.result.get("reason", "—"))),
        ("algorithm / dataset", f"{run.spec.get('algorithm')} on {run.spec.get('dataset')}"),
        ("aggregation", str(run.spec.get("aggregation"))),
        ("model versions", str(run.versions[-1].version if run.versions else 0)),
        ("last test accuracy", "—" if acc is None else f"{acc:.4f}"),
        ("duration", f"{run.duration_s:.1f} s"),
        ("samples trained", str(run.versions[-1].samples if run.versions else 0)),
        ("policy switches", str(len(run.switches))),
        ("leader restarts", str(len(run.resumes))),
        ("nodes joined / left", f"{run.joins} / {run.departures}"),
        ("updates refused / tasks failed", f"{run.refused} / {run.failed_tasks}"),
    ]
    return rows


def _node_table(run: RunData) -> str:
    head = "<tr><th>node</th><th>tasks</th><th>samples</th><th>s in job</th><th>samples/s</th></tr>"
    rows = "".join(
        f"<tr><td>{html.escape(n.node_id)}</td><td>{n.tasks}</td><td>{n.samples}</td>"
        f"<td>{n.seconds_in_job:.1f}</td>"
        f"<td>{'—' if n.samples_per_second is None else f'{n.samples_per_second:.1f}'}</td></tr>"
        for n in run.nodes
    )
    return f"<table class='nodes'>{head}{rows}</table>"


def write_report(run: RunData, folder: Path) -> Report:
    """Draw the plots of ``run`` and write them with ``index.html`` into ``folder``."""
    plt = _pyplot()
    if not run.versions:
        raise ReportError(f"job {run.job_id} made no model version yet: nothing to plot")
    folder.mkdir(parents=True, exist_ok=True)
    images = tuple(folder / f"{name}.png" for name in ("accuracy", "timeline", "nodes", "versions"))
    _accuracy_plot(plt, run, images[0])
    _timeline_plot(plt, run, images[1])
    _nodes_plot(plt, run, images[2])
    _versions_plot(plt, run, images[3])
    switches = "".join(
        f"<li>{s.seconds:.1f} s: {html.escape(s.previous)} → {html.escape(s.mode)}: "
        f"{html.escape(s.reason)}</li>"
        for s in run.switches
    )
    figures = "".join(
        f'<figure><img alt="{p.stem}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"></figure>'
        for p in images
    )
    page = folder / "index.html"
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>EDDL job {html.escape(run.job_id)}</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:1400px}"
        "th{text-align:left;padding-right:1em}img{max-width:100%}"
        ".nodes td,.nodes th{padding:0 1em 0 0;text-align:right}"
        ".nodes td:first-child,.nodes th:first-child{text-align:left}</style></head><body>"
        f"<h1>EDDL job {html.escape(run.job_id)}</h1>{_table(_summary(run))}"
        f"<h2>Nodes</h2>{_node_table(run)}"
        f"<h2>Policy switches</h2><ul>{switches or '<li>none</li>'}</ul>"
        f"<h2>Plots</h2>{figures}<h2>Not in this report</h2><p>{_NOT_STORED}</p>"
        "</body></html>\n"
    )
    return Report(folder, page, images)
