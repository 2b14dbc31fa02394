"""One process, many EP endpoints: the real ExecutionPlanner on N loopback ports.

``ep-server serve`` listens on one address, and ports cannot be added to a
``grpc.aio`` server once it has started (``add_insecure_port`` then binds a
socket that accepts connections but is never served). So this script builds
the EP exactly as ``ep-server serve`` does (:func:`load_settings`, the
installed plugins through :func:`load_registry`) and starts it N times with
:func:`ep_server.server.start_server`, each on ``127.0.0.1:0``: N servers
sharing one plugin registry, one event loop and one process.

With ``--bare`` it serves bench/bare.py's fixed answer on the N ports
instead (no EP at all): the floor gRPC itself sets for a fan-out.

With ``--hang`` it also opens a port that accepts TCP connections and never
answers (no HTTP/2 preface, no response), for the failure measurement.

Prints one line on stdout when every port is serving::

    ready 127.0.0.1:41001 127.0.0.1:41002 ... hang=127.0.0.1:41100

and runs until SIGTERM or SIGINT, then stops every server and exits 0.
Run ``python -m bench.multiport --help``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from bench import bare
from bench.harness import LOOPBACK, new_parser
from ep_server.config import load_settings
from ep_server.host import detect_host
from ep_server.plugins import load_registry
from ep_server.server import Running, start_server


class Silent:
    """A TCP port that accepts connections and never answers: no HTTP/2
    preface, no response. It reads and discards what the peer sends."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while await reader.read(65536):
                pass  # read and ignore, so the peer's writes never block
        except ConnectionError:
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def close(self) -> None:
        """Stop accepting, drop every held connection, let the handlers end."""
        if self.server is not None:
            self.server.close()
        writers = list(self.writers)
        for writer in writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
        await asyncio.sleep(0)  # the handlers see EOF and return


async def run(ports: int, config: str | None, hang: bool, bare: bool = False) -> None:
    if bare:
        await run_bare(ports)
        return
    # Each server would open (and lock) the same ledger file: give each its own,
    # in memory. The fan-out asks carry no schedule, so nothing is booked.
    overrides = {"server.listen": LOOPBACK, "schedule.ledger": ":memory:"}
    settings = load_settings(config, overrides=overrides)
    registry = load_registry(settings, detect_host(settings.host))
    running: list[Running] = []
    silent = Silent()
    try:
        for _ in range(ports):
            running.append(await start_server(settings, registry))
        words = ["ready", *(f"127.0.0.1:{r.port}" for r in running)]
        if hang:
            words.append(f"hang=127.0.0.1:{await silent.start()}")
        print(" ".join(words), flush=True)
        await until_signalled()
    finally:
        await silent.close()
        await asyncio.gather(*(r.shutdown(0) for r in running), return_exceptions=True)


async def run_bare(ports: int) -> None:
    """N bench/bare.py servers (a fixed YES, nothing else): the floor that
    gRPC itself sets, for comparison with the EP."""
    answer = bare.fixed_answer(1)
    servers = [await bare.start(LOOPBACK, answer) for _ in range(ports)]
    print(" ".join(["ready", *(f"127.0.0.1:{port}" for _, port in servers)]), flush=True)
    try:
        await until_signalled()
    finally:
        await asyncio.gather(*(s.stop(0) for s, _ in servers), return_exceptions=True)


async def until_signalled() -> None:
    """Return when this process gets SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main() -> None:
    parser = new_parser(__doc__)
    parser.add_argument("--ports", type=int, default=100, help="EP endpoints to serve (1-1000)")
    parser.add_argument("--config", metavar="FILE", help="as ep-server serve --config")
    parser.add_argument("--hang", action="store_true", help="also a port that never answers")
    parser.add_argument("--bare", action="store_true", help="bare gRPC servers, not the EP")
    args = parser.parse_args()
    if not 1 <= args.ports <= 1000:
        parser.error("--ports must be from 1 to 1000")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(run(args.ports, args.config, args.hang, args.bare))


if __name__ == "__main__":
    main()
