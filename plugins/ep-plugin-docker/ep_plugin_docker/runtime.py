"""Is the container runtime reachable? A connection to its Unix socket.

The check is a coroutine: ``asyncio.open_unix_connection`` under a short
timeout never blocks the event loop, so it costs the server nothing while it
waits, and it is cancelled with the Ask at the plugin's deadline.
"""

from __future__ import annotations

import asyncio

from ep_plugin_docker import reasons as R
from ep_server import Reason

__all__ = ["check_runtime"]


async def check_runtime(socket_path: str, seconds: float) -> Reason | None:
    """``None`` if ``socket_path`` accepts a connection within ``seconds``
    seconds, else a retryable CAPACITY reason saying why not."""
    try:
        async with asyncio.timeout(seconds):
            _, writer = await asyncio.open_unix_connection(socket_path)
            writer.close()
            await writer.wait_closed()
    except TimeoutError:
        return _unavailable(socket_path, f"no answer within {seconds:g}s")
    except (OSError, NotImplementedError, AttributeError) as exc:
        return _unavailable(socket_path, getattr(exc, "strerror", None) or str(exc))
    return None


def _unavailable(socket_path: str, why: str) -> Reason:
    return R.reason(
        R.RUNTIME_UNAVAILABLE,
        "",
        f"the container runtime is not reachable at {socket_path}: {why}",
        retryable=True,
    )
