"""The HTTP limit: a bare aiohttp server of the EP's HTTP stack with a fixed answer.

One ``web.Application`` with one route, ``POST /v1/ask``, that reads and
decodes each request's JSON body (as any real server must, like
bench/bare.py decodes each gRPC request) and answers a fixed JSON body,
``--body-hex`` (the bench passes the EP's own answer, so both send the same
bytes), with the EP's content type and a request id header of the EP's
length. It costs what aiohttp and the socket
cost and nothing more. It says ``listening on 127.0.0.1:PORT`` on stderr
once it serves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from aiohttp import web

from bench.harness import LOOPBACK

__all__ = ["bare_app"]

#: A fixed ``x-request-id``, as long as the EP's, so both answers are the same size.
_HEADERS = {"x-request-id": "0" * 32}


def bare_app(body: bytes) -> web.Application:
    """The application: ``POST /v1/ask`` answering ``body`` as JSON."""

    async def ask(request: web.Request) -> web.Response:
        json.loads(await request.read())
        return web.Response(body=body, content_type="application/json", headers=_HEADERS)

    app = web.Application(handler_args={"access_log": None})
    app.router.add_post("/v1/ask", ask)
    return app


async def serve(listen: str, body: bytes) -> None:
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(bare_app(body), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, int(port)).start()
    bound = runner.addresses[0][1]
    print(f"listening on {host}:{bound}", file=sys.stderr, flush=True)
    try:
        await asyncio.Event().wait()  # until SIGTERM ends the process
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default=LOOPBACK)
    parser.add_argument("--body-hex", required=True, help="the fixed answer, hex-encoded")
    args = parser.parse_args()
    asyncio.run(serve(args.listen, bytes.fromhex(args.body_hex)))
