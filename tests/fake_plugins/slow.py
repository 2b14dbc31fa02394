"""A plugin module loaded by import path (``[plugins].modules``) in the
command-line tests: claims ``uri://slow`` and answers after
``taskinfo.seconds`` seconds."""

from __future__ import annotations

import asyncio

from ep_server import Claim, Offer, TaskQuery, Verdict, hookimpl


@hookimpl
def ep_claims() -> list[Claim]:
    return [Claim("uri://slow", ("uri://slow-service",))]


@hookimpl
async def ep_evaluate(query: TaskQuery) -> Verdict:
    await asyncio.sleep(float(query.taskinfo.get("seconds", 0)))
    return Verdict.yes(Offer("uri://slow-service", {"slept": query.taskinfo.get("seconds", 0)}))
