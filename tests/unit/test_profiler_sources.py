"""Static and dynamic profiles from the machine, and from a Raspberry Pi's sources."""

from __future__ import annotations

import os
import platform
import stat
from pathlib import Path

import numpy as np
import psutil

from eddl.profiler.dynamic import DynamicCollector
from eddl.profiler.sources import HostSources
from eddl.profiler.static import collect_static

PI_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU part\t: 0xd08

Hardware\t: BCM2835
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""


def pi_tree(root: Path, throttled: str | None = "50005\n") -> Path:
    """A directory laid out like the parts of a Raspberry Pi 4's /proc and /sys we read."""
    (root / "proc" / "device-tree").mkdir(parents=True)
    (root / "proc" / "cpuinfo").write_text(PI_CPUINFO)
    (root / "proc" / "device-tree" / "model").write_text("Raspberry Pi 4 Model B Rev 1.4\x00")
    zone = root / "sys" / "class" / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "temp").write_text("61354\n")
    freq = root / "sys" / "devices" / "system" / "cpu" / "cpu0" / "cpufreq"
    freq.mkdir(parents=True)
    (freq / "cpuinfo_max_freq").write_text("1800000\n")
    if throttled is not None:
        fw = root / "sys" / "devices" / "platform" / "soc" / "soc:firmware"
        fw.mkdir(parents=True)
        (fw / "get_throttled").write_text(throttled)
    return root


def test_raspberry_pi_sources_are_read(tmp_path: Path) -> None:
    src = HostSources(pi_tree(tmp_path), vcgencmd=None)
    # The Pi's cpuinfo names no CPU model ("Model" is the board): unknown, not the board name.
    assert src.cpu_model() is None
    assert src.board_model() == "Raspberry Pi 4 Model B Rev 1.4"
    assert src.max_frequency_mhz() == 1800.0
    assert src.temperature_celsius() == 61.354
    assert src.throttle_flags() == 0x50005
    assert src.has_temperature() and src.has_throttle_status()


def test_absent_sources_are_unknown_never_guessed(tmp_path: Path) -> None:
    src = HostSources(tmp_path, vcgencmd=None)
    assert src.cpu_model() is None
    assert src.board_model() is None
    assert src.max_frequency_mhz() is None
    assert src.temperature_celsius() is None
    assert src.throttle_flags() is None
    assert not src.has_temperature() and not src.has_throttle_status()


def test_garbage_in_sources_reads_as_unknown(tmp_path: Path) -> None:
    pi_tree(tmp_path, throttled="not-hex\n")
    zone = tmp_path / "sys" / "class" / "thermal" / "thermal_zone0" / "temp"
    zone.write_text("hot\n")
    (tmp_path / "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").write_text("0\n")
    src = HostSources(tmp_path, vcgencmd=None)
    assert src.temperature_celsius() is None
    assert src.throttle_flags() is None
    assert src.max_frequency_mhz() is None


def test_hottest_thermal_zone_is_reported(tmp_path: Path) -> None:
    pi_tree(tmp_path)
    zone1 = tmp_path / "sys" / "class" / "thermal" / "thermal_zone1"
    zone1.mkdir()
    (zone1 / "temp").write_text("70500\n")
    assert HostSources(tmp_path, vcgencmd=None).temperature_celsius() == 70.5


def test_cpu_model_from_x86_cpuinfo(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Core(TM) i5-8250U CPU @ 1.60GHz\n"
    )
    assert HostSources(tmp_path, vcgencmd=None).cpu_model() == (
        "Intel(R) Core(TM) i5-8250U CPU @ 1.60GHz"
    )


def fake_vcgencmd(tmp_path: Path, output: str, code: int = 0) -> str:
    script = tmp_path / "vcgencmd"
    script.write_text(
        f'#!/bin/sh\n[ "$1" = get_throttled ] || exit 9\necho "{output}"\nexit {code}\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_vcgencmd_is_used_when_sysfs_has_no_throttle_file(tmp_path: Path) -> None:
    root = pi_tree(tmp_path / "root", throttled=None)
    src = HostSources(root, vcgencmd=fake_vcgencmd(tmp_path, "throttled=0x4"))
    assert src.has_throttle_status()
    assert src.throttle_flags() == 0x4


def test_failing_vcgencmd_reads_as_unknown(tmp_path: Path) -> None:
    root = pi_tree(tmp_path / "root", throttled=None)
    src = HostSources(root, vcgencmd=fake_vcgencmd(tmp_path, "VCHI init failed", code=255))
    assert src.throttle_flags() is None
    missing = HostSources(root, vcgencmd=str(tmp_path / "no-such-tool"))
    assert missing.throttle_flags() is None


def test_dynamic_sample_reports_pi_temperature_and_throttling(tmp_path: Path) -> None:
    collector = DynamicCollector(HostSources(pi_tree(tmp_path), vcgencmd=None), clock=lambda: 42.0)
    s = collector.sample()
    assert s.timestamp == 42.0
    assert s.temperature_celsius == 61.354
    assert s.throttle_flags == 0x50005
    assert s.throttled is True  # bits 0 and 2: under-voltage and throttled right now
    (tmp_path / "sys/devices/platform/soc/soc:firmware/get_throttled").write_text("50000\n")
    later = collector.sample()
    assert later.throttled is False  # only the "since boot" bits remain


def test_dynamic_sample_of_this_machine() -> None:
    s = DynamicCollector().sample()
    assert 0.0 <= s.cpu_percent <= 100.0
    assert 0 < s.memory_available_bytes <= psutil.virtual_memory().total
    assert s.process_rss_bytes > 0
    if hasattr(os, "getloadavg"):
        assert s.load_average_1m is not None


def test_dynamic_sample_sees_its_own_cpu_use() -> None:
    collector = DynamicCollector()
    total = sum(i * i for i in range(500_000))  # bounded busy work, tens of milliseconds
    assert total > 0
    assert collector.sample().process_cpu_percent > 0.0


def test_static_profile_of_this_machine() -> None:
    p = collect_static("node-1", "leader")
    assert p.node_id == "node-1" and p.role == "leader"
    assert p.logical_cores == psutil.cpu_count()
    assert p.total_memory_bytes == psutil.virtual_memory().total
    assert p.architecture == platform.machine()
    assert p.python_version == platform.python_version()
    assert p.numpy_version == np.__version__


def test_static_profile_uses_board_sources(tmp_path: Path) -> None:
    p = collect_static("pi", "worker", HostSources(pi_tree(tmp_path), vcgencmd=None))
    assert p.board_model == "Raspberry Pi 4 Model B Rev 1.4"
    assert p.has_temperature and p.has_throttle_status
