"""Where the profiler reads the machine: ``/proc``, ``/sys`` and the Raspberry Pi's firmware.

Everything is read under a root directory (``/`` on a real device, a prepared tree in tests), so
the Raspberry Pi paths can be exercised on any machine. A source that is absent or unreadable
yields ``None``: the profile says "unknown" rather than guessing.

Raspberry Pi facts used here: ``/proc/device-tree/model`` names the board;
``/sys/class/thermal/thermal_zone0/temp`` is the SoC temperature in millidegrees;
``get_throttled`` (sysfs on recent kernels, else ``vcgencmd get_throttled``) is a bit field whose
low nibble is "now" (under-voltage, frequency capped, throttled, soft temperature limit) and whose
bits 16-19 are the same conditions "since boot".
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

__all__ = ["THROTTLED_NOW_MASK", "HostSources"]

# Bits 0-3 of get_throttled: under-voltage, ARM frequency capped, throttled, soft temp limit.
THROTTLED_NOW_MASK = 0xF
_SYSFS_THROTTLED = "sys/devices/platform/soc/soc:firmware/get_throttled"
_VCGENCMD_RE = re.compile(r"throttled=(0x[0-9a-fA-F]+|\d+)")
# Not "Model": on a Raspberry Pi that is the board, reported as board_model instead.
_CPUINFO_KEYS = ("model name", "Processor", "cpu model")
_VCGENCMD_TIMEOUT_S = 2.0


class HostSources:
    """Reads the OS's descriptions of the machine under ``root``.

    ``vcgencmd`` is the path of the Raspberry Pi firmware tool (looked up on ``PATH`` by
    default); ``None`` disables it. Thermal zones are discovered once, at construction, so
    that periodic sampling costs one small file read per zone.
    """

    def __init__(self, root: Path | str = "/", vcgencmd: str | None = "auto") -> None:
        self.root = Path(root)
        self.vcgencmd = shutil.which("vcgencmd") if vcgencmd == "auto" else vcgencmd
        self._zones = self._discover_thermal_zones()

    def _read(self, rel: str) -> str | None:
        try:
            return (self.root / rel).read_text(errors="replace")
        except (OSError, ValueError):
            return None

    def _discover_thermal_zones(self) -> list[Path]:
        base = self.root / "sys" / "class" / "thermal"
        try:
            zones = sorted(p / "temp" for p in base.glob("thermal_zone*"))
        except OSError:
            return []
        return [z for z in zones if z.exists()]

    # -- static facts -------------------------------------------------------------------------

    def cpu_model(self) -> str | None:
        text = self._read("proc/cpuinfo")
        if text is None:
            return None
        found: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if sep and value and key in _CPUINFO_KEYS and key not in found:
                found[key] = value
        for key in _CPUINFO_KEYS:
            if key in found:
                return found[key]
        return None

    def board_model(self) -> str | None:
        text = self._read("proc/device-tree/model")
        if text is None:
            return None
        model = text.replace("\x00", "").strip()
        return model or None

    def max_frequency_mhz(self) -> float | None:
        text = self._read("sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
        if text is None:
            return None
        try:
            khz = int(text.strip())
        except ValueError:
            return None
        return khz / 1000.0 if khz > 0 else None

    def has_temperature(self) -> bool:
        return bool(self._zones)

    def has_throttle_status(self) -> bool:
        return (self.root / _SYSFS_THROTTLED).exists() or self.vcgencmd is not None

    # -- dynamic readings ---------------------------------------------------------------------

    def temperature_celsius(self) -> float | None:
        """Hottest thermal zone, in °C (the one that throttles first matters)."""
        best: float | None = None
        for zone in self._zones:
            try:
                milli = int(zone.read_text().strip())
            except (OSError, ValueError):
                continue
            celsius = milli / 1000.0
            if -273.15 <= celsius <= 1000.0 and (best is None or celsius > best):
                best = celsius
        return best

    def throttle_flags(self) -> int | None:
        """The raw ``get_throttled`` bit field, or ``None`` where the device has none."""
        text = self._read(_SYSFS_THROTTLED)
        if text is not None:
            try:
                return int(text.strip(), 16)
            except ValueError:
                return None
        if self.vcgencmd is None:
            return None
        try:
            out = subprocess.run(
                [self.vcgencmd, "get_throttled"],
                capture_output=True,
                text=True,
                timeout=_VCGENCMD_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        match = _VCGENCMD_RE.search(out.stdout)
        if out.returncode != 0 or match is None:
            return None
        return int(match.group(1), 0)
