"""The profiler's accuracy and cost: probe vs shaped links, compute predictions, own CPU use.

Run: ``python -m bench.profiler`` (``--quick`` for a shorter run; the netns part needs root).

1. **Probe vs shaped rate.** Two network namespaces joined by a veth pair, both directions
   shaped with ``tc tbf`` (eddl.profiler.netlab); a probe server in one namespace, the probe
   client in the other; upload and download estimates against the shaped rate at 3 rates.
2. **Compute predictions.** For each job (algorithm, model): the micro-benchmark's prediction
   and the steady-state training rate (tasks of 1,000 samples for ~2 s), measured alternately
   3 times; the error of the median prediction against the median measurement, timed by wall
   clock and by the training thread's CPU time. Then the runtime estimator on a real task loop
   paced to a known rate that becomes 3x slower: its error after 1..5 tasks.
3. **Profiler cost.** A child process that only runs the sampler at the default period, for
   20 s: its CPU time over wall time (fraction of one core); and the CPU cost of one sample.

BLAS threads are pinned to 1 (the script re-executes itself with ``OPENBLAS_NUM_THREADS=1`` and
friends unless they are set), as an EDDL worker sharing cores should run; see docs/profiler.md.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from bench.report import markdown_table, write_section
from eddl.learn import tifed
from eddl.learn.lsgd import LSGDTrainer
from eddl.learn.model import MLPSpec, init_params
from eddl.learn.sgd import SGDTrainer
from eddl.profiler.estimator import RuntimeEstimator
from eddl.profiler.netlab import ShapedLink, netns_unavailable_reason, shaped_link
from eddl.profiler.sampler import DEFAULT_PERIOD_S
from eddl.profiler.throughput import TrainerLike, measure_throughput, synthetic_samples

__all__ = ["main"]

Job = tuple[str, tuple[int, ...], Callable[[], TrainerLike], dict[str, np.ndarray], type]


def _jobs() -> list[Job]:
    def mlp(sizes: tuple[int, ...]) -> MLPSpec:
        return MLPSpec(sizes, ("tanh",) * (len(sizes) - 2) + ("sigmoid",), "bce")

    small, large = mlp((784, 40, 32, 10)), mlp((784, 256, 128, 10))
    tcfg = tifed.TifedConfig(sizes=(784, 200, 10))
    return [
        ("lsgd", small.sizes, lambda: LSGDTrainer(small, 0.01), init_params(small, 0), np.float32),
        ("lsgd", large.sizes, lambda: LSGDTrainer(large, 0.01), init_params(large, 0), np.float32),
        ("sgd b32", small.sizes, lambda: SGDTrainer(small, 0.01, 32), init_params(small, 0),
         np.float32),
        ("sgd b32", large.sizes, lambda: SGDTrainer(large, 0.01, 32), init_params(large, 0),
         np.float32),
        ("tifed", tcfg.sizes, lambda: tifed.TifedTrainer(tcfg), tifed.init_params(tcfg), np.uint8),
    ]  # fmt: skip


# -- 1. probe vs shaped links -------------------------------------------------------------------


def _start_server(link: ShapedLink) -> tuple[subprocess.Popen[str], int]:
    argv = [sys.executable, "-m", "eddl.profiler", "serve", "--bind", f"{link.server_ip}:0"]
    proc = subprocess.Popen(link.command("server", argv), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline and sel.select(deadline - time.monotonic()):
            line = proc.stdout.readline()
            if line.startswith("PROBE_PORT "):
                return proc, int(line.split()[1])
            if not line:
                break
    proc.kill()
    proc.wait(10)
    raise RuntimeError("probe server did not start")


def probe_section(rates: Sequence[float], seconds_per_transfer: float) -> str:
    reason = netns_unavailable_reason()
    if reason is not None:
        return f"Not measured on this run: {reason}."
    rows = []
    for rate in rates:
        with shaped_link(rate) as link:
            proc, port = _start_server(link)
            try:
                payload = int(link.rate_bytes_per_second * seconds_per_transfer)
                argv = [
                    sys.executable, "-m", "eddl.profiler", "probe",
                    f"{link.server_ip}:{port}", "--payload-bytes", str(payload),
                    "--chunk-bytes", str(64 * 1024), "--repeats", "3", "--timeout", "120",
                ]  # fmt: skip
                out = subprocess.run(
                    link.command("client", argv), capture_output=True, text=True, timeout=180
                )
                result = json.loads(out.stdout)
            finally:
                proc.terminate()
                proc.wait(10)
        shaped = rate * 1e6 / 8
        up, down = result["upload_bytes_per_second"], result["download_bytes_per_second"]
        rows.append(
            [
                f"{rate:g}",
                f"{up * 8 / 1e6:.2f}",
                f"{(up / shaped - 1) * 100:+.1f}%",
                f"{down * 8 / 1e6:.2f}",
                f"{(down / shaped - 1) * 100:+.1f}%",
                f"{result['rtt_seconds'] * 1e3:.2f}",
            ]
        )
    table = markdown_table(
        ["shaped Mbit/s", "upload Mbit/s", "error", "download Mbit/s", "error", "RTT ms"], rows
    )
    return (
        f"{table}\n\nBoth directions shaped (`tbf`, burst 32 KiB, latency 50 ms); median of 3 "
        f"timed transfers of {seconds_per_transfer:g} s at the shaped rate after a warm-up. "
        "Figures are goodput: TCP/IP + Ethernet headers take 66 of every 1514 bytes on the "
        "wire, so -4.4% is the expected reading."
    )


# -- 2. compute predictions ---------------------------------------------------------------------


def _steady_rate(
    trainer: TrainerLike,
    params: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    clock: Callable[[], float],
    seconds: float,
    task: int = 1000,
) -> float:
    rng = np.random.default_rng(3)
    done, t0 = 0, clock()
    while clock() - t0 < seconds:
        start = (done // task * task) % (len(x) - task)
        trainer.train(params, x[start : start + task], y[start : start + task], rng=rng)
        done += task
    return done / (clock() - t0)


def compute_section(rounds: int, steady_s: float) -> str:
    rows = []
    for name, sizes, factory, params0, dtype in _jobs():
        cells = [name, "-".join(map(str, sizes))]
        for clock in (time.perf_counter, time.thread_time):
            x, y = synthetic_samples(8000, sizes[0], sizes[-1], dtype, np.random.default_rng(1))
            params = {k: v.copy() for k, v in params0.items()}
            trainer = factory()
            predicted, measured = [], []
            for _ in range(rounds):
                r = measure_throughput(factory, params0, sizes[0], sizes[-1], dtype, clock=clock)
                predicted.append(r.samples_per_second)
                measured.append(_steady_rate(trainer, params, x, y, clock, steady_s))
            p, m = statistics.median(predicted), statistics.median(measured)
            if clock is time.perf_counter:
                cells += [f"{p:,.0f}", f"{m:,.0f}"]
            cells.append(f"{(p / m - 1) * 100:+.1f}%")
        rows.append(cells)
    table = markdown_table(
        ["algorithm", "model", "predicted samples/s", "measured samples/s", "error (wall)",
         "error (CPU time)"],
        rows,
    )  # fmt: skip
    return (
        f"{table}\n\nPrediction: the micro-benchmark (1 s budget); measured: steady-state "
        f"training in tasks of 1,000 samples for {steady_s:g} s; medians of {rounds} alternating "
        "rounds. Wall-clock figures include the other processes sharing this machine's cores."
    )


def _paced_tasks(rate: float, n: int = 20) -> Iterator[float]:
    """Real TIFeD tasks of ``n`` samples padded to ``n / rate`` s: a device capped at ``rate``."""
    config = tifed.TifedConfig(sizes=(784, 32, 10))
    trainer = tifed.TifedTrainer(config)
    params = tifed.init_params(config)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, 784)).astype(np.uint8)
    y = rng.integers(0, 10, size=n)
    while True:
        t0 = time.perf_counter()
        trainer.train(params, x, y)
        time.sleep(max(0.0, n / rate - (time.perf_counter() - t0)))
        yield time.perf_counter() - t0


def estimator_section(tasks_before: int = 8) -> str:
    n, fast, slow = 20, 400.0, 400.0 / 3
    # The prior: a micro-benchmark 20% optimistic, as the table above shows can happen.
    est = RuntimeEstimator(prior=fast * 1.2)
    rows = []

    def row(label: str, true: float) -> None:
        now = time.time()
        value = est.samples_per_second(now) or 0.0
        rows.append([label, f"{value:,.1f}", f"{true:,.1f}", f"{(value / true - 1) * 100:+.1f}%",
                     f"{est.confidence(now):.2f}"])  # fmt: skip

    tasks = _paced_tasks(fast, n)
    for _ in range(tasks_before):
        est.observe(n, next(tasks), time.time())
    row(f"{tasks_before} tasks before the change", fast)
    tasks = _paced_tasks(slow, n)
    for k in range(1, 6):
        est.observe(n, next(tasks), time.time())
        row(f"{k} task(s) after the 3x slowdown", slow)
    table = markdown_table(
        ["observations", "estimate samples/s", "true samples/s", "error", "confidence"], rows
    )
    return (
        f"{table}\n\nA task loop of real TIFeD training tasks ({n} samples) paced to exactly "
        f"{fast:g} samples/s, then to a third of it (a device capped by its governor), so the "
        "true rate is known whatever else runs on this machine; wall clock. Prior: 1.2x the "
        "fast rate; EWMA on log-rate, alpha 0.4, 0.7 on a regime change."
    )


# -- 3. profiler cost ---------------------------------------------------------------------------

_COST_CHILD = """
import json, sys, time
from eddl.profiler.sampler import Sampler
seconds, period = float(sys.argv[1]), float(sys.argv[2])
t0, c0 = time.monotonic(), time.process_time()
with Sampler(period_s=period) as s:
    time.sleep(seconds)
wall, cpu = time.monotonic() - t0, time.process_time() - c0
print(json.dumps({"wall": wall, "cpu": cpu, "samples": len(s.history())}))
"""


def cost_section(seconds: float) -> str:
    from eddl.profiler.dynamic import DynamicCollector

    collector = DynamicCollector()
    count = 200
    c0 = time.process_time()
    for _ in range(count):
        collector.sample()
    per_sample = (time.process_time() - c0) / count
    rows = []
    for period in (DEFAULT_PERIOD_S, 1.0):
        out = subprocess.run(
            [sys.executable, "-c", _COST_CHILD, str(seconds), str(period)],
            capture_output=True, text=True, timeout=seconds + 60, check=True,
        )  # fmt: skip
        r = json.loads(out.stdout)
        rows.append(
            [
                f"{period:g} s" + (" (default)" if period == DEFAULT_PERIOD_S else ""),
                f"{r['wall']:.1f}",
                str(r["samples"]),
                f"{r['cpu'] * 1e3:.1f}",
                f"{r['cpu'] / r['wall'] * 100:.3f}%",
                f"{per_sample / period * 100:.3f}%",
            ]
        )
    table = markdown_table(
        ["period", "wall s", "samples", "process CPU ms", "share of one core",
         "sampling alone"],
        rows,
    )  # fmt: skip
    return (
        f"{table}\n\nOne sample costs {per_sample * 1e3:.2f} ms of CPU (mean of {count}). "
        '"Share of one core" is the whole child process (an otherwise idle Python '
        'interpreter running only the sampler thread); "sampling alone" is the per-sample '
        "cost divided by the period. Target: < 1% of one core."
    )


_BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def main(argv: Sequence[str] | None = None) -> int:
    if any(v not in os.environ for v in _BLAS_VARS):
        # numpy reads these when it loads: start again with them set (see the module docstring).
        env = dict(os.environ, **{v: os.environ.get(v, "1") for v in _BLAS_VARS})
        rest = list(sys.argv[1:] if argv is None else argv)
        os.execve(sys.executable, [sys.executable, "-m", "bench.profiler", *rest], env)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter run (less precise)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    quick = args.quick
    parts = [
        ("Probe bandwidth estimate vs shaped link", probe_section((8.0, 40.0, 100.0),
                                                                 0.5 if quick else 1.0)),
        ("Micro-benchmark vs steady-state training rate",
         compute_section(2 if quick else 3, 1.0 if quick else 2.0)),
        ("Runtime estimator after a 3x slowdown", estimator_section()),
        ("Profiler CPU cost", cost_section(5.0 if quick else 20.0)),
    ]  # fmt: skip
    body = "\n\n".join(f"### {title}\n\n{text}" for title, text in parts)
    print(body)
    if not args.no_write:
        command = ["python", "-m", "bench.profiler", *(sys.argv[1:] if argv is None else argv)]
        write_section("profiler", "Profiler: probe, compute predictions, own cost", body, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
