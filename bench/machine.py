"""One line describing the machine a benchmark ran on, for its results."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe(*extra: str) -> str:
    """Architecture, CPUs (and model), OS, Python, plus ``extra`` items."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [
        f"{platform.machine()}, {os.cpu_count()} CPUs{f' ({model})' if model else ''}",
        f"{platform.system()} {platform.release()}",
        f"Python {platform.python_version()}",
        *extra,
    ]
    return ", ".join(parts)
