"""The fleet simulator's report: the table of its runs and the text around it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from bench.fleet_devices import DeviceProfile
from bench.report import markdown_table

if TYPE_CHECKING:
    from bench.fleet import FleetResult

__all__ = ["describe", "table"]


def table(results: Sequence[FleetResult]) -> str:
    rows = [
        [
            r.topology,
            r.devices,
            r.alive,
            f"{r.failed} ({r.failed_why})" if r.failed else "0",
            f"{r.device_updates_per_s:.1f}",
            f"{r.updates_per_s:.1f}",
            f"{1000 * r.t_sync:.0f}",
            f"{r.devices / r.t_sync:.1f}",
            f"{r.scheduler_us:.0f}",
            f"{r.aggregator_us:.0f}",
            f"{r.heartbeat_ms_per_s:.1f}",
            f"{r.leader_cpu_ms:.2f}",
            f"{r.host_cpu_share:.2f}",
        ]
        for r in results
    ]
    return markdown_table(
        [
            "topology",
            "devices",
            "alive at the root",
            "devices failed",
            "device updates/s",
            "root updates/s",
            "t_sync ms (mean)",
            "BUC = n / t_sync (1/s)",
            "root scheduler µs/update",
            "root aggregator µs/update",
            "root heartbeats ms CPU/s",
            "root CPU ms/update",
            "simulator CPU (cores)",
        ],
        rows,
    )


def describe(
    profiles: Sequence[DeviceProfile],
    sizes: Sequence[int],
    seconds: float,
    ramp: float,
    results: Sequence[FleetResult],
) -> str:
    names = ", ".join(
        f"{p.name} ({p.samples_per_second:g} samples/s, "
        f"{p.upload_bytes_per_second * 8 / 1e6:g}/{p.download_bytes_per_second * 8 / 1e6:g} "
        f"Mbit/s up/down, RTT {p.rtt_seconds * 1000:g} ms)"
        for p in profiles
    )
    return (
        f"One `eddl-leader` root process (plaintext on loopback; split: two sub-leader "
        f"processes, `eddl-leader --upstream`, started by hand, device i at sub-leader i mod "
        f"2; auto: every device dials the root, which runs `--split auto` against a declared "
        f"link capacity with two standby sub-leader processes as candidates, and measured "
        f"once it promoted), async FedAsync job, model "
        f"{'-'.join(map(str, sizes))} float32; the devices are real worker daemons on one "
        f"asyncio loop in the benchmark's process, each with its own session and TCP "
        f"connection, playing in turn the example profiles {names}: training sleeps the "
        f"profile's time for the task's samples, transfers are paced by its link. Devices come "
        f"online {ramp:g}/s; heartbeat interval max(5, n/40) s. Measured for {seconds:g} s "
        f"after every device started and 5 s more. Scheduler and aggregator: the leader's own "
        f"`eddl_leader_command_seconds` (owner-thread CPU of the GetTask commands and of "
        f"`submit_update`) per update taken; leader CPU: the whole process (gRPC threads, "
        f"owner, store writer). t_sync: a task's time less its training (model pull and update "
        f"push, paced). All processes share this machine's 2 cores with other work.\n\n"
        + table(results)
        + "".join(f"\n\n{r.topology}, {r.devices} devices: {r.note}" for r in results if r.note)
    )
