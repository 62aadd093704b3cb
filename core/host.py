"""Facts about the machine a measurement runs on, for reports beside timings."""

from __future__ import annotations

import platform


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def host_description() -> str:
    return f"{cpu_name()}; {platform.system()} {platform.release()}; python {platform.python_version()}"
