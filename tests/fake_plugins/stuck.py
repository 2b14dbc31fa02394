"""A plugin module for the command-line tests: claims ``uri://stuck``; its
plain (blocking) ``ep_evaluate`` sleeps ``taskinfo.seconds`` seconds in a
worker thread, like a plugin stuck on a hung call."""

from __future__ import annotations

import time

from ep_server import Claim, Offer, TaskQuery, Verdict, hookimpl


@hookimpl
def ep_claims() -> list[Claim]:
    return [Claim("uri://stuck", ("uri://stuck-service",))]


@hookimpl
def ep_evaluate(query: TaskQuery) -> Verdict:
    time.sleep(float(query.taskinfo.get("seconds", 0)))
    return Verdict.yes(Offer("uri://stuck-service", {}))
