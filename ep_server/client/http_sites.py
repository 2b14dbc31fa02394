"""Asking sites that speak the IVOA note's HTTP interface: ``POST {url}accept``.

The question goes as the note's JSON body, ``{"tasktype": ..., "taskinfo":
{...}}`` (with ``resources`` and ``schedule`` beside them when asked for),
over one aiohttp session per :class:`~ep_server.client.Client`, made on
first use and closed with the client. The answer is read as
:mod:`ep_server.client.http_reply` says.

* **Retries**, by the client's :class:`~ep_server.client.retry.RetryPolicy`
  within the deadline: a connection that could not be made or was dropped
  before the answer, and 502, 503 and 504. Never a failed TLS handshake.
* **Redirects**: 301, 302, 307 and 308 are followed, the question posted
  again, at most :data:`MAX_REDIRECTS` times, to the same scheme or from
  ``http`` up to ``https``, never down. Call metadata (the bearer token), the
  client certificate and the site's ``server_name`` go only to the site's
  own host; another host is asked with the system's root certificates.
* **Limits**: the deadline bounds everything (a site that hangs is a
  ``DEADLINE_EXCEEDED``); at most ``max_answer_bytes`` of a reply are read.
  No cookies are kept: one site cannot set state another sees.

Call metadata is sent as HTTP headers (``-bin`` values in base64, as gRPC
sends them), except those that would replace the request's own
``Content-Type``, ``Accept`` or ``Accept-Encoding``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import random
import ssl
import urllib.parse
from collections.abc import Sequence
from types import MappingProxyType

import aiohttp
import grpc

from ep_server.client.channels import CredentialsError, read_tls_file
from ep_server.client.http_reply import MAX_ANSWER_BYTES, RETRIED, Reply, reply_outcome
from ep_server.client.results import Answer, Failure, FailureKind
from ep_server.client.retry import Deadline, RetryPolicy, closed_hint
from ep_server.client.sites import TLS, Site

__all__ = ["MAX_REDIRECTS", "HttpSites", "redirect_target", "ssl_context"]

#: Redirects followed for one attempt.
MAX_REDIRECTS = 3
_FOLLOWED = frozenset({301, 302, 307, 308})
_HEADERS = MappingProxyType(
    {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Accept-Encoding": "identity",  # a compressed answer could outgrow the read limit
    }
)
_CHUNK = 64 * 1024
#: What gRPC reports for a connection not made or dropped, and so does this.
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE

Metadata = Sequence[tuple[str, str | bytes]]


def ssl_context(tls: TLS | None) -> ssl.SSLContext:
    """A client TLS context: the site's CA (else the system's root
    certificates) and its client certificate, if any.

    :raises CredentialsError: when a file cannot be read or is not PEM.
    """
    tls = tls or TLS()
    ca = read_tls_file(tls.ca, "CA file")
    read_tls_file(tls.cert, "certificate file")
    read_tls_file(tls.key, "key file")
    try:
        context = ssl.create_default_context(cadata=ca.decode("ascii") if ca else None)
        if tls.cert is not None:
            context.load_cert_chain(tls.cert, tls.key)
    except (UnicodeDecodeError, ssl.SSLError, OSError) as exc:  # not PEM, a key not the cert's
        files = ", ".join(str(p) for p in (tls.ca, tls.cert, tls.key) if p is not None)
        raise CredentialsError(f"cannot load TLS files ({files}): {exc}") from exc
    return context


def redirect_target(url: str, location: str) -> str | None:
    """Where a redirect from ``url`` to ``location`` goes, or None when it is
    not followed: no location, a scheme other than http(s), or https down
    to http."""
    if not location:
        return None
    target = urllib.parse.urljoin(url, location)
    old, new = urllib.parse.urlsplit(url).scheme, urllib.parse.urlsplit(target).scheme
    if new not in ("http", "https") or (old, new) == ("https", "http"):
        return None
    return target


def _headers(metadata: Metadata) -> dict[str, str]:
    own = {key.lower() for key in _HEADERS}
    return {
        key: value if isinstance(value, str) else base64.b64encode(value).decode()
        for key, value in metadata
        if key.lower() not in own
    }


@dataclasses.dataclass(frozen=True, slots=True)
class _Hop:
    """Where one POST goes, and with what."""

    url: str
    headers: dict[str, str]
    tls: TLS | None = None
    server_name: str | None = None


class HttpSites:
    """Asks note sites for a client: one session, TLS contexts per settings."""

    def __init__(
        self,
        *,
        metadata: Metadata = (),
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self._metadata = _headers(metadata)
        self.retry = retry or RetryPolicy()
        self.max_answer_bytes = max_answer_bytes
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._contexts: dict[TLS | None, ssl.SSLContext] = {}

    async def ask(self, site: Site, body: bytes, deadline: Deadline) -> Answer | Failure:
        """Post ``body`` to ``{site.address}accept``; every error becomes a :class:`Failure`."""
        try:
            async with asyncio.timeout(deadline.remaining()):
                return await self._with_retries(site, body, deadline)
        except TimeoutError:
            return Failure(FailureKind.DEADLINE_EXCEEDED, "no answer before the deadline")
        except CredentialsError as exc:
            return Failure(FailureKind.TLS, str(exc), attempts=0)
        except Exception as exc:  # one site's bug must not lose the other answers
            return Failure(FailureKind.CLIENT_ERROR, f"{type(exc).__name__}: {exc}")

    async def _with_retries(self, site: Site, body: bytes, deadline: Deadline) -> Answer | Failure:
        server_name = site.tls.server_name if site.tls is not None else None
        first = _Hop(site.address + "accept", self._metadata, site.tls, server_name)
        if first.url.startswith("https:"):
            self._context(site.tls)  # unreadable TLS files: a failure before any attempt
        delays = self.retry.delays(self._rng)
        attempts = 0
        while True:
            attempts += 1
            outcome, again = await self._attempt(first, body)
            if isinstance(outcome, Failure):
                outcome = dataclasses.replace(outcome, attempts=attempts)
            delay = next(delays, None) if again else None
            if delay is None or delay >= deadline.remaining():
                return outcome
            await asyncio.sleep(delay)

    async def _attempt(self, hop: _Hop, body: bytes) -> tuple[Answer | Failure, bool]:
        """One attempt, redirects followed: the outcome, and whether it may
        be retried."""
        try:
            for _ in range(MAX_REDIRECTS + 1):
                reply = await self._post(hop, body)
                if reply.status not in _FOLLOWED:
                    return reply_outcome(reply, self.max_answer_bytes), reply.status in RETRIED
                next_hop = self._redirect(hop, reply.location)
                if next_hop is None:
                    return reply_outcome(reply, self.max_answer_bytes), False
                hop = next_hop
        except aiohttp.ClientError as exc:
            return _failure(exc, hop)
        message = f"more than {MAX_REDIRECTS} redirects, the last to {hop.url}"
        return Failure(FailureKind.REFUSED, message), False

    async def _post(self, hop: _Hop, body: bytes) -> Reply:
        session = self._session_for()
        async with session.post(
            hop.url,
            data=body,
            headers={**_HEADERS, **hop.headers},
            ssl=self._context(hop.tls) if hop.url.startswith("https:") else True,
            server_hostname=hop.server_name,
            allow_redirects=False,
        ) as response:
            limit = self.max_answer_bytes
            if (response.content_length or 0) > limit:
                data, cut = b"", True
            else:
                data, cut = await _read(response.content, limit)
            return Reply(
                hop.url,
                response.status,
                data,
                cut=cut,
                content_type=response.headers.get("Content-Type", ""),
                encoding=response.headers.get("Content-Encoding", "").strip().lower(),
                location=response.headers.get("Location", ""),
            )

    def _redirect(self, hop: _Hop, location: str) -> _Hop | None:
        """The next hop of a redirect, or None when it is not followed. The
        site's own settings go along only to its own host."""
        url = redirect_target(hop.url, location)
        if url is None:
            return None
        if urllib.parse.urlsplit(url).hostname == urllib.parse.urlsplit(hop.url).hostname:
            return dataclasses.replace(hop, url=url)
        return _Hop(url, {})

    def _context(self, tls: TLS | None) -> ssl.SSLContext:
        context = self._contexts.get(tls)
        if context is None:
            context = self._contexts[tls] = ssl_context(tls)
        return context

    def _session_for(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # No cap on connections: every site is asked at once, as over gRPC.
                connector=aiohttp.TCPConnector(limit=0),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None),  # the deadline bounds each ask
            )
        return self._session

    async def close(self) -> None:
        """Close the session and its connections."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()


async def _read(stream: aiohttp.StreamReader, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes, and whether there was more."""
    data = bytearray()
    async for chunk in stream.iter_chunked(_CHUNK):
        data += chunk
        if len(data) > limit:
            return bytes(data[:limit]), True
    return bytes(data), False


def _failure(exc: aiohttp.ClientError, hop: _Hop) -> tuple[Failure, bool]:
    """A connection failure, and whether it may be retried.

    A failed TLS handshake is not retried (the next would fail alike). A
    connection that could not be made, or was closed before the answer
    came, is. Over https a connection ended after it was made (closed, or
    with a TLS alert) is how a server that wants a client certificate, or
    does not trust the one sent, ends it: that is a TLS failure with a hint.
    """
    message = str(exc) or type(exc).__name__
    alert = isinstance(exc.__cause__, ssl.SSLError)
    if isinstance(exc, aiohttp.ClientSSLError):
        return Failure(FailureKind.TLS, message, _UNAVAILABLE), False
    dropped = isinstance(exc, aiohttp.ServerDisconnectedError) or (
        isinstance(exc, aiohttp.ClientOSError) and not isinstance(exc, aiohttp.ClientConnectorError)
    )
    if dropped and hop.url.startswith("https:"):
        hinted = f"{closed_hint(hop.tls or TLS())}; {message}"
        return Failure(FailureKind.TLS, hinted, _UNAVAILABLE), not alert
    if alert:
        return Failure(FailureKind.TLS, message, _UNAVAILABLE), False
    if dropped:
        message += "; a server that speaks TLS closes plaintext connections so: try https://"
    retried = isinstance(exc, aiohttp.ClientOSError) or dropped
    return Failure(FailureKind.UNREACHABLE, message, _UNAVAILABLE), retried
