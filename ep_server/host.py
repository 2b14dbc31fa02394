"""What the EP knows of its host: usable CPUs, physical memory, platform."""

from __future__ import annotations

import os
import platform
import sys

from ep_server.config import HostSettings
from ep_server.model import HostInfo

__all__ = ["detect_host"]


def _usable_cpus() -> int:
    # sched_getaffinity honours taskset/cgroup cpusets; cpu_count() does not.
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return 0


def detect_host(overrides: HostSettings | None = None) -> HostInfo:
    """Detect the host's capacity; values set in ``[host]`` win."""
    o = overrides or HostSettings()
    return HostInfo(
        cores=o.cores or _usable_cpus(),
        memory=o.memory if o.memory is not None else _physical_memory(),
        architecture=o.architecture or platform.machine().lower(),
        os=o.os or sys.platform,
    )
