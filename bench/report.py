"""Write one benchmark's section into docs/benchmarks.md, leaving the other sections alone.

Each section sits between ``<!-- bench:NAME:begin -->`` and ``<!-- bench:NAME:end -->`` and
starts with the exact command that produced it, the date and the machine it ran on.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import psutil

__all__ = [
    "BENCH_FILE",
    "RELIABILITY_FILE",
    "machine_line",
    "markdown_table",
    "write_section",
]

BENCH_FILE = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
RELIABILITY_FILE = BENCH_FILE.with_name("reliability.md")

_HEADER = """# Benchmarks

Every table below was written by a script in `bench/`; each section names the command that
produced it. Ratios are measured side by side in one run; absolute times depend on the machine.
"""


def machine_line() -> str:
    freq = psutil.cpu_freq()
    mhz = f", {freq.max:.0f} MHz" if freq and freq.max else ""
    mem = psutil.virtual_memory().total / 2**30
    return (
        f"{platform.machine()}, {os.cpu_count()} cores{mhz}, {mem:.0f} GiB RAM, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines.extend("| " + " | ".join(cell(v) for v in row) + " |" for row in rows)
    return "\n".join(lines)


def _invocation() -> list[str]:
    """How this process was started, as a person would type it from the repository root."""
    script = Path(sys.argv[0])
    if script.suffix == ".py" and script.parent.name == "bench":
        return ["python", "-m", f"bench.{script.stem}", *sys.argv[1:]]
    return ["python", *sys.argv]


def write_section(
    name: str, title: str, body: str, command: Sequence[str] | None = None, path: Path = BENCH_FILE
) -> None:
    """Replace (or append) section ``name`` of the benchmark report."""
    cmd = shlex.join(command if command is not None else _invocation())
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"<!-- bench:{name}:begin -->\n## {title}\n\n"
        f"Command: `{cmd}`  \nRun: {stamp} on {machine_line()}\n\n{body.strip()}\n"
        f"<!-- bench:{name}:end -->"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else _HEADER
    pattern = re.compile(
        rf"<!-- bench:{re.escape(name)}:begin -->.*?<!-- bench:{re.escape(name)}:end -->", re.S
    )
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
