"""A one-line progress report on a terminal while sites are pending."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from typing import TextIO

from ep_server.client.render import cut, printable
from ep_server.client.results import Result
from ep_server.client.retry import Deadline
from ep_server.client.sites import Site

__all__ = ["Progress"]

_NAMES_SHOWN = 3


class Progress:
    """``"12/100 answered; waiting for 88 (3.2s left)"``, redrawn in place.

    Draws nothing unless ``enabled`` (the CLI enables it when stderr is a
    terminal and more than one site is asked).
    """

    def __init__(
        self, stream: TextIO, sites: Sequence[Site], deadline: Deadline, *, enabled: bool
    ) -> None:
        self.stream = stream
        self.total = len(sites)
        self.pending = [site.name for site in sites]
        self.deadline = deadline
        self.enabled = enabled

    def line(self) -> str:
        """The current status line."""
        answered = f"{self.total - len(self.pending)}/{self.total} answered"
        if not self.pending:
            return answered
        shown = len(self.pending) <= _NAMES_SHOWN
        waiting = ", ".join(self.pending) if shown else str(len(self.pending))
        return f"{answered}; waiting for {waiting} ({self.deadline.remaining():.1f}s left)"

    def done(self, result: Result) -> None:
        """Count one more site as finished, and redraw."""
        if result.site.name in self.pending:
            self.pending.remove(result.site.name)
        self.draw()

    def draw(self) -> None:
        """Redraw the line (when enabled), cut to the terminal's width so
        that it never wraps (a wrapped line could not be redrawn in place)."""
        if self.enabled:
            columns = max(4, shutil.get_terminal_size().columns - 1)
            self.stream.write("\r\x1b[K" + cut(printable(self.line()), columns))
            self.stream.flush()

    def clear(self) -> None:
        """Erase the line (when enabled)."""
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    async def tick(self, interval: float = 0.2) -> None:
        """Redraw every ``interval`` seconds until cancelled, so the time left
        counts down while nothing arrives."""
        while self.enabled and self.pending:
            self.draw()
            await asyncio.sleep(interval)
