"""What every benchmark does with its results: say what machine they came
from, print them, and append them to its results file."""

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


def publish(text: str, results: Path, title: str, write: bool) -> None:
    """Print ``text`` and, if ``write``, append it to ``results`` (which
    gets ``title`` as its heading when new)."""
    print("\n" + text)
    if not write:
        return
    header = "" if results.exists() else f"# {title}\n\n"
    with results.open("a", encoding="utf-8") as out:
        out.write(header + text + "\n\n")
    print(f"\nappended to {results.name} in {results.parent}")
