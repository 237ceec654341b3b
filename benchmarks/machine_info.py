"""The machine details the benchmarks print beside their results."""

from __future__ import annotations

import platform


def cpu_model() -> str:
    """Return the `model name` line of /proc/cpuinfo, or the machine type when it has none."""
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()
