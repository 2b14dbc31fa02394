"""``ep``: ask ExecutionPlanner services from the command line.

::

    ep ask --tasktype uri://docker-container --set image=docker.io/example:1.0 \\
           --cores 4:16 --memory 8GiB --sites sites.toml --accept-servicetype uri://docker-uws
    ep info 127.0.0.1:50051

Exit status: 0 when at least one acceptable YES came back (``ask``) or the
EP answered (``info``); 1 otherwise; 2 on a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from ep_server.client.args import UsageError, address_from_args, build_parser, query_from_args
from ep_server.client.ask import Client
from ep_server.client.choose import (
    Choice,
    RankKey,
    candidates,
    earliest,
    fastest,
    most_cores,
    most_memory,
    rank,
)
from ep_server.client.convert import message_json
from ep_server.client.progress import Progress
from ep_server.client.render import (
    booking_json,
    booking_line,
    info_lines,
    printable,
    results_json,
    table,
)
from ep_server.client.results import Failure, Result
from ep_server.client.retry import Deadline
from ep_server.client.sites import TLS, Site, SiteListError, load_sites
from ep_server.client.targets import is_url
from ep_server.logs import route_grpc_core_logs
from ep_server.model import TaskQuery

__all__ = ["main", "run"]

EXIT_YES, EXIT_NONE, EXIT_USAGE = 0, 1, 2


def run() -> None:
    """The ``ep`` console script: :func:`main`, then exit with its status.

    gRPC's own log lines go through :mod:`logging`, where only warnings and
    errors are shown: a failed TLS handshake, say, is reported once, as the
    site's failure, not also as the C core's line."""
    route_grpc_core_logs()
    logging.basicConfig(format="ep: %(name)s: %(message)s", level=logging.WARNING)
    sys.exit(main())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ep`` console script; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command == "info":
            return asyncio.run(_info(args))
        if args.command in _BOOKING_COMMANDS:
            return asyncio.run(_booking_command(args))
        return _ask(args, _sites(args), query_from_args(args))
    except UsageError as exc:
        print(f"ep: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``ep ask ... | head``): say nothing more, and
        # keep Python from failing again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_NONE


def _sites(args: argparse.Namespace) -> list[Site]:
    """The sites to ask: each site list's, then each ``--endpoint``; a site
    named twice (the same address and TLS settings) is asked once."""
    if not args.sites and not args.endpoints:
        raise UsageError("give --sites FILE or at least one --endpoint HOST:PORT or URL")
    tls = _tls(args)
    sites: list[Site] = []
    for path in args.sites:
        if isinstance(path, str):  # the URL of one site
            sites.append(_endpoint_site(path, tls))
            continue
        try:
            sites += load_sites(path)
        except SiteListError as exc:
            raise UsageError(str(exc)) from None
    sites += [_endpoint_site(address, tls) for address in args.endpoints]
    unique: dict[tuple[str, TLS | None], Site] = {}
    for site in sites:
        first = unique.setdefault((site.address, site.tls), site)
        if first is not site:
            print(
                printable(f"ep: {site.name} is {first.name} again ({site.address}): asked once"),
                file=sys.stderr,
            )
    return list(unique.values())


def _endpoint_site(address: str, tls: TLS | None) -> Site:
    """A site given on the command line. A URL's scheme says whether it is
    TLS; the flags' settings go with an https:// URL, and an http:// URL
    takes none (it is plaintext)."""
    if not is_url(address):
        return Site(address, address, tls)
    if address.startswith("http://") and tls is not None:
        raise UsageError(
            f"{address} is plaintext: --tls, --ca, --cert and --server-name "
            "go with https:// URLs and HOST:PORT"
        )
    return Site(address, address, None if tls == TLS() else tls)


def _tls(args: argparse.Namespace) -> TLS | None:
    """TLS settings for ``--endpoint``/``ep info`` from the security flags."""
    if (args.cert is None) != (args.key is None):
        raise UsageError("--cert and --key go together")
    if not (args.tls or args.ca or args.cert or args.server_name):
        return None
    return TLS(args.ca, args.cert, args.key, args.server_name)


def _metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """The bearer token from --token-file or $EP_TOKEN, as call metadata."""
    if args.token_file is not None:
        try:
            token = args.token_file.read_text(encoding="ascii").strip()
        except UnicodeDecodeError:
            raise UsageError(f"--token-file: {args.token_file} is not an ASCII token") from None
        except OSError as exc:
            raise UsageError(
                f"--token-file: cannot read {args.token_file}: {exc.strerror}"
            ) from None
    else:
        token = os.environ.get("EP_TOKEN", "").strip()
    if token and not (token.isascii() and token.isprintable() and " " not in token):
        raise UsageError("the bearer token must be printable ASCII without spaces")
    return (("authorization", f"Bearer {token}"),) if token else ()


_RANK_KEYS: dict[str, RankKey] = {
    "most-cores": most_cores,
    "most-memory": most_memory,
    "earliest": earliest,
    "fastest": fastest,
}


def _ask(args: argparse.Namespace, sites: list[Site], query: TaskQuery) -> int:
    metadata = _metadata(args)
    results: list[Result] = []
    interrupted = False
    try:
        asyncio.run(_gather(sites, query, args.deadline, metadata, results))
    except KeyboardInterrupt:  # show what came back before Ctrl-C
        interrupted = True
    order = {id(site): i for i, site in enumerate(sites)}
    results.sort(key=lambda r: order[id(r.site)])
    name = args.rank or ("earliest" if query.schedule is not None else "most-cores")
    ranking = rank(candidates(results, args.accept), _RANK_KEYS[name])
    print(results_json(results, ranking) if args.json else _report(results, ranking))
    if interrupted:
        missing = len(sites) - len(results)
        print(f"ep: interrupted; {missing} site(s) not heard from", file=sys.stderr)
        return 130
    return EXIT_YES if ranking else EXIT_NONE


async def _gather(
    sites: list[Site],
    query: TaskQuery,
    seconds: float,
    metadata: tuple[tuple[str, str], ...],
    results: list[Result],
) -> None:
    """Ask every site into ``results`` (kept if interrupted), showing
    progress on stderr when it is a terminal."""
    deadline = Deadline.after(seconds)
    progress = Progress(sys.stderr, sites, deadline, enabled=len(sites) > 1 and _tty())
    ticker = asyncio.create_task(progress.tick())
    try:
        async with Client(metadata=metadata) as client:
            async for result in client.ask_many(sites, query, deadline=deadline):
                results.append(result)
                progress.done(result)
    finally:
        ticker.cancel()
        progress.clear()


def _tty() -> bool:
    return sys.stderr.isatty()


def _report(results: list[Result], ranking: list[Choice]) -> str:
    failed = sum(isinstance(r.outcome, Failure) for r in results)
    yes = len({id(c.result) for c in ranking})
    summary = f"{len(results)} site(s): {yes} with an acceptable YES, {failed} failed"
    if ranking:
        best = ranking[0]
        summary += f"; best: {best.site.name} ({best.offer.servicetype})"
    return f"{table(results, ranking)}\n\n{printable(summary)}"


_BOOKING_COMMANDS = ("accept", "reject", "cancel", "bookings")


async def _booking_command(args: argparse.Namespace) -> int:
    """ep accept / reject / cancel / bookings: one call to one EP."""
    address = address_from_args(args)
    site = Site(address, address, _tls(args))
    async with Client(metadata=_metadata(args)) as client:
        if args.command == "accept":
            reply: Any = await client.accept_offer(site, args.offer_id, deadline=args.deadline)
        elif args.command == "reject":
            reply = await client.reject_offer(site, args.offer_id, deadline=args.deadline)
        elif args.command == "cancel":
            reply = await client.cancel_booking(site, args.booking_id, deadline=args.deadline)
        else:
            reply = await client.bookings(site, deadline=args.deadline)
    if isinstance(reply, Failure):
        print(printable(f"ep: {address}: {reply.describe()}"), file=sys.stderr)
        return EXIT_NONE
    bookings = reply if isinstance(reply, list) else [] if reply is None else [reply]
    if args.json:
        print(json.dumps([booking_json(b) for b in bookings], indent=2))
    elif args.command == "reject":
        print(f"released offer {args.offer_id}")
    else:
        print("\n".join(booking_line(b) for b in bookings) or "no bookings")
    return EXIT_YES


async def _info(args: argparse.Namespace) -> int:
    address = address_from_args(args)
    site = Site(address, address, _tls(args))
    async with Client(metadata=_metadata(args)) as client:
        info = await client.service_info(site, deadline=args.deadline)
    if isinstance(info, Failure):
        print(printable(f"ep: {address}: {info.describe()}"), file=sys.stderr)
        return EXIT_NONE
    if args.json:
        print(json.dumps(message_json(info.raw) if info.raw else {}, indent=2))
    else:
        print(info_lines(address, info))
    return EXIT_YES


if __name__ == "__main__":
    raise SystemExit(main())
