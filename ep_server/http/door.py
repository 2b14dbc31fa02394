"""The HTTP door's application, assembled from the server's parts."""

from __future__ import annotations

from aiohttp import web

from ep_server.config import Settings
from ep_server.http.app import Door, build_app
from ep_server.http.broker import broker_routes
from ep_server.http.note import note_routes
from ep_server.http.openapi import openapi_json
from ep_server.http.page import page_handler
from ep_server.metrics import Metrics
from ep_server.pipeline import CallPipeline
from ep_server.servicer import ExecutionPlannerServicer
from ep_server.wire.http_json import JSON_DEPTH_SLACK

__all__ = ["http_app"]


def http_app(
    settings: Settings,
    servicer: ExecutionPlannerServicer,
    pipeline: CallPipeline,
    metrics: Metrics | None,
) -> web.Application:
    """The HTTP application of a server: the proto's REST routes and the
    routes beside them, on the same servicer and pipeline as gRPC."""
    cfg = settings.http
    door = Door(
        servicer=servicer,
        pipeline=pipeline,
        metrics=metrics,
        max_json_depth=settings.server.max_taskinfo_depth + JSON_DEPTH_SLACK,
        max_body_bytes=cfg.max_body_bytes,
        cors_origins=tuple(cfg.cors_origins),
        mtls=settings.tls.client_ca is not None,
    )
    extra = [
        *note_routes(door),
        *broker_routes(door),
        ("GET", "/openapi.json", _openapi),
        # The page shows the site's description only where anyone may ask for it.
        ("GET", "/", page_handler(servicer, describe="GetServiceInfo" in pipeline.anonymous)),
    ]
    return build_app(door, extra)


async def _openapi(request: web.Request) -> web.Response:
    """``GET /openapi.json``: the OpenAPI document, as committed
    (:mod:`ep_server.http.openapi`)."""
    return web.Response(body=openapi_json(), content_type="application/json")
