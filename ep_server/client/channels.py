"""A small pool of ``grpc.aio`` channels, one per address and TLS setting.

A channel is made the first time a target is asked and reused afterwards, so
asking the same sites again costs no new connection. Close the pool (or use
it as an ``async with`` block) when done. An address that names several
replicas (``dns:///NAME:PORT``, ``HOST:PORT,HOST:PORT``) gets one channel
that spreads calls over them (see :mod:`ep_server.client.targets`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from ep_server.client.sites import TLS, Site
from ep_server.client.targets import Target, look_up, look_up_blocking, target

__all__ = ["ChannelPool", "CredentialsError", "channel_credentials", "read_tls_file"]

ChannelOptions = Sequence[tuple[str, Any]]


class CredentialsError(OSError):
    """A CA, certificate or key file could not be read."""


def read_tls_file(path: Path | None, what: str) -> bytes | None:
    """The bytes of a CA, certificate or key file (``None`` for no path).

    :raises CredentialsError: naming the file and what it is for.
    """
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CredentialsError(f"cannot read TLS {what} {path}: {exc.strerror}") from exc


def channel_credentials(tls: TLS) -> grpc.ChannelCredentials:
    """``grpc.ssl_channel_credentials`` from the PEM files named in ``tls``.

    :raises CredentialsError: when a file cannot be read.
    """
    return grpc.ssl_channel_credentials(
        root_certificates=read_tls_file(tls.ca, "CA file"),
        private_key=read_tls_file(tls.key, "key file"),
        certificate_chain=read_tls_file(tls.cert, "certificate file"),
    )


#: gRPC waits this long (1 s by default, growing) before reconnecting to an
#: address that refused it, and a call made meanwhile fails at once. Kept
#: well below the client's retry waits (see RetryPolicy), during which the
#: client waits for the channel to connect: a server that comes up late is
#: reached within about 0.1-0.4 s of coming up.
RECONNECT_OPTIONS: ChannelOptions = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


class ChannelPool:
    """Channels keyed by (address, TLS settings); ``options`` apply to all
    (after :data:`RECONNECT_OPTIONS` and a target's round-robin options,
    which they may override)."""

    def __init__(self, options: ChannelOptions = ()) -> None:
        self._options = list(options)
        self._channels: dict[tuple[str, TLS | None], grpc.aio.Channel] = {}

    def __len__(self) -> int:
        return len(self._channels)

    def channel(self, site: Site) -> grpc.aio.Channel:
        """The channel for ``site``, made on first use. Host names in a list
        of replicas are looked up here, blocking: from a coroutine, use
        :meth:`open`.

        :raises CredentialsError: when the site's TLS files cannot be read.
        :raises TargetError: when a list of replicas cannot be made a target.
        """
        channel = self._channels.get((site.address, site.tls))
        if channel is None:
            found = look_up_blocking(site.address)
            channel = self._add(site, target(site.address, found))
        return channel

    async def open(self, site: Site) -> grpc.aio.Channel:
        """:meth:`channel`, with the names in a list of replicas looked up
        without blocking the event loop."""
        channel = self._channels.get((site.address, site.tls))
        if channel is None:
            found = await look_up(site.address)
            channel = self._channels.get((site.address, site.tls)) or self._add(
                site, target(site.address, found)
            )
        return channel

    def _add(self, site: Site, where: Target) -> grpc.aio.Channel:
        channel = self._channels[(site.address, site.tls)] = self._open(where, site.tls)
        return channel

    def _open(self, where: Target, tls: TLS | None) -> grpc.aio.Channel:
        # Later options override earlier ones: the pool's own come last.
        options = [*RECONNECT_OPTIONS, *where.options, *self._options]
        if tls is None:
            return grpc.aio.insecure_channel(where.target, options=options)
        if tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        return grpc.aio.secure_channel(where.target, channel_credentials(tls), options=options)

    async def close(self, grace: float | None = None) -> None:
        """Close every channel (cancelling calls still running after ``grace``)."""
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(grace)

    async def __aenter__(self) -> ChannelPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
