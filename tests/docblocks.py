"""Running the shell blocks of README.md and docs/ as written.

Not collected as tests. A block runs with bash (``-e``, ``pipefail``) in a
folder of the test's, with the venv's commands first on ``PATH`` (as after
``source .venv/bin/activate``); :meth:`Shell.stop` ends whatever it left
running in the background.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def section(path: Path, heading: str) -> str:
    """The text under ``heading`` (a whole line) up to the next heading of
    the same or a higher level."""
    text = path.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n") + 1
    level = heading.split(" ", 1)[0]
    stops = [m.start() for m in re.finditer(rf"^#{{1,{len(level)}}} ", text[start + 1 :], re.M)]
    return text[start : start + 1 + stops[0]] if stops else text[start:]


def blocks(text: str) -> list[tuple[str, str]]:
    """The fenced code blocks of ``text``: (language, body)."""
    return re.findall(r"^```(\w*)\n(.*?)^```$", text, re.M | re.S)


#: The documents whose blocks must each be run by a test or marked as an
#: illustration: the README and docs/ (not the example plugin's own files).
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def all_blocks() -> list[tuple[str, str, Path]]:
    """Every fenced block of :data:`DOCUMENTS`: (language, body, document)."""
    return [(lang, body, doc) for doc in DOCUMENTS for lang, body in blocks(doc.read_text())]


def marked_blocks(text: str) -> list[tuple[str, str, str]]:
    """Each fenced block of ``text`` with the HTML comment on the line just
    before it (``""`` when there is none): (marker, language, body)."""
    pattern = r"(?:^<!--([^\n]*?)-->\n)?^```(\w*)\n(.*?)^```$"
    return [(m.strip(), lang, body) for m, lang, body in re.findall(pattern, text, re.M | re.S)]


def venv_env(**extra: str) -> dict[str, str]:
    """The environment with this interpreter's scripts first on ``PATH``."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    return {**os.environ, "PATH": path, **extra}


class Shell:
    """Runs blocks in ``folder``; background jobs are stopped by :meth:`stop`."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env = folder, env
        self.groups: list[int] = []

    def sh(self, text: str, timeout: float = 120, check: bool = True) -> str:
        """Run ``text`` and return what it printed (stdout and stderr)."""
        with tempfile.TemporaryFile() as out:
            process = subprocess.Popen(
                ["bash", "-e", "-o", "pipefail", "-c", text],
                cwd=self.folder,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # its background jobs write to the file, so bash's end is not theirs
            self.groups.append(process.pid)
            process.wait(timeout)
            out.seek(0)
            printed = out.read().decode(errors="replace")
        if check:
            assert process.returncode == 0, f"{text}\n---\n{printed}"
        return printed

    def stop(self) -> None:
        """SIGTERM every block's process group, SIGKILL after 20 s."""
        for group in self.groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_members(g) for g in self.groups):
            time.sleep(0.1)
        for group in self.groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


def _members(group: int) -> list[int]:
    """The live (not zombie) processes of a process group."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == group:
            found.append(int(stat.parent.name))
    return found
