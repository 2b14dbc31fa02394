"""Starting and stopping the HTTP door on the running event loop."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ep_server.config import Settings
from ep_server.errors import StartupError

__all__ = ["HttpDoor", "start_http", "tls_context"]


class _MalformedRequests(logging.Filter):
    """aiohttp logs a request its parser refuses (bad header syntax, a
    Content-Encoding it cannot decode) as an ERROR with a traceback, though
    it is the client's fault and the client got its 400: anyone could fill
    the log. Such a record becomes one INFO line without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args = (
                "refused a malformed HTTP request from %s: %s",
                (
                    peer,
                    " ".join(str(error.message).split()),
                ),
            )
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_AIOHTTP_SERVER_LOG = logging.getLogger("aiohttp.server")
if not any(isinstance(f, _MalformedRequests) for f in _AIOHTTP_SERVER_LOG.filters):
    _AIOHTTP_SERVER_LOG.addFilter(_MalformedRequests())


@dataclass
class HttpDoor:
    """A started HTTP door."""

    runner: web.AppRunner
    port: int

    async def stop(self, grace: float) -> None:
        """Stop listening, let requests in flight finish for up to ``grace``
        seconds (then cancel them), and close."""
        # aiohttp takes the timeout only when the runner is made, and reads
        # it only here, at cleanup.
        self.runner._shutdown_timeout = grace
        await self.runner.cleanup()


async def start_http(app: web.Application, settings: Settings) -> HttpDoor:
    """Serve ``app`` on ``[http] listen`` with ``[tls]``'s TLS.

    :raises OSError: "cannot listen on HOST:PORT: ..." when the address
        cannot be bound.
    """
    listen = settings.http.listen
    host, _, port = listen.rpartition(":")
    context = tls_context(settings)
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=settings.server.grace_period
    )
    await runner.setup()
    site = web.TCPSite(
        runner,
        host.strip("[]"),
        int(port),
        ssl_context=context,
        reuse_port=settings.server.reuse_port or None,
    )
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        why = (exc.strerror or str(exc)).lower()
        raise OSError(f"cannot listen on {listen} ([http] listen): {why}") from exc
    bound = runner.addresses[0][1] if runner.addresses else int(port)
    return HttpDoor(runner, bound)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server TLS context of ``[tls]`` (None when TLS is off): the same
    certificate as gRPC's, and client certificates asked for and verified
    against ``client_ca`` (required when ``require_client_cert``)."""
    tls = settings.tls
    if not tls.enabled:
        return None
    assert tls.cert is not None
    assert tls.key is not None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(tls.cert, tls.key)
        if tls.client_ca is not None:
            context.load_verify_locations(cafile=tls.client_ca)
            context.verify_mode = (
                ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
            )
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(f"[tls]: cannot use the certificate files for HTTP: {exc}") from exc
    context.set_alpn_protocols(["http/1.1"])
    return context
