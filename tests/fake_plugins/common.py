"""Test-only plugins, built as objects so each test states exactly what they do."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ep_server import Cause, Claim, Offer, Reason, TaskQuery, Verdict, hookimpl


@dataclass
class FakeSource:
    """Stands in for an importlib.metadata EntryPoint."""

    name: str
    plugin: Any = None
    error: BaseException | None = None
    dist: Any = None
    loads: int = 0

    def load(self) -> Any:
        self.loads += 1
        if self.error is not None:
            raise self.error
        return self.plugin


@dataclass
class Dist:
    name: str
    version: str


class Offering:
    """Claims task types and offers one service type for each."""

    def __init__(self, servicetype: str, *tasktypes: str, fallback: bool = False) -> None:
        self.servicetype = servicetype
        self.tasktypes = tasktypes
        self.fallback = fallback
        self.calls: list[TaskQuery] = []

    @hookimpl
    def ep_claims(self) -> list[Claim]:
        return [Claim(t, (self.servicetype,), self.fallback) for t in self.tasktypes]

    @hookimpl
    async def ep_evaluate(self, query: TaskQuery) -> Verdict:
        self.calls.append(query)
        return Verdict.yes(Offer(self.servicetype, {"endpoint": f"http://{self.servicetype}"}))


class Declining:
    """Claims task types and always declines with the given reasons."""

    def __init__(self, *tasktypes: str, reasons: tuple[Reason, ...] = ()) -> None:
        self.tasktypes = tasktypes
        self.reasons = reasons or (Reason("NOPE", "never", Cause.POLICY),)

    @hookimpl
    def ep_claims(self) -> list[Claim]:
        return [Claim(t) for t in self.tasktypes]

    @hookimpl
    def ep_evaluate(self) -> Verdict:  # a plain function: runs in a worker thread
        return Verdict.no(*self.reasons)


class Raising:
    """Claims a task type and raises while evaluating it."""

    def __init__(self, tasktype: str) -> None:
        self.tasktype = tasktype

    @hookimpl
    def ep_claims(self) -> list[Claim]:
        return [Claim(self.tasktype)]

    @hookimpl
    async def ep_evaluate(self, query: TaskQuery) -> Verdict:
        raise RuntimeError("plugin bug")


class Returning:
    """Claims a task type and returns whatever it is given."""

    def __init__(self, tasktype: str, result: Any) -> None:
        self.tasktype = tasktype
        self.result = result

    @hookimpl
    def ep_claims(self) -> list[Claim]:
        return [Claim(self.tasktype)]

    @hookimpl
    async def ep_evaluate(self) -> Any:
        return self.result


class SlowAsync:
    """Awaits ``seconds`` before saying yes; records whether it was cancelled."""

    def __init__(self, tasktype: str, seconds: float) -> None:
        self.tasktype = tasktype
        self.seconds = seconds
        self.cancelled = False

    @hookimpl
    def ep_claims(self) -> list[Claim]:
        return [Claim(self.tasktype)]

    @hookimpl
    async def ep_evaluate(self) -> Verdict:
        try:
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return Verdict.yes(Offer("uri://slow"))


class BlockingSync:
    """A plain ep_evaluate that blocks its worker thread until released."""

    def __init__(self, tasktype: str) -> None:
        self.tasktype = tasktype
        self.release = threading.Event()

    @hookimpl
    def ep_claims(self) -> list[Claim]:
        return [Claim(self.tasktype)]

    @hookimpl
    def ep_evaluate(self) -> Verdict:
        self.release.wait(timeout=30)
        time.sleep(0)
        return Verdict.yes(Offer("uri://blocking"))


@dataclass
class Configured:
    """Records the settings and host it was configured with."""

    seen: list[Mapping[str, Any]] = field(default_factory=list)

    @hookimpl
    def ep_configure(self, settings: Mapping[str, Any]) -> str:
        self.seen.append(settings)
        return str(settings.get("word", "default"))

    @hookimpl
    def ep_claims(self, config: str) -> list[Claim]:
        return [Claim(f"uri://configured-{config}", ("uri://configured-service",))]

    @hookimpl
    async def ep_evaluate(self, config: str) -> Verdict:
        return Verdict.yes(Offer("uri://configured-service", {"word": config}))
