"""The limit: a bare gRPC server with our Ask signature and a fixed answer.

It decodes each request (as any real server must) and returns one prebuilt
``AskResponse``, so it costs what gRPC and protobuf cost and nothing more.
``--sync`` serves the same with the thread-pool ``grpc.server`` instead of
``grpc.aio``, to measure which of the two a Python EP should use.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor

import grpc

from bench.harness import ASK_NAME, LOOPBACK, SERVICE_NAME
from ep_server.pb import execution_planner_pb2 as pb


def fixed_answer(offers: int) -> pb.AskResponse:
    """A YES shaped like the EP's own answers: ``offers`` offers, each with a
    service type, a two-key serviceinfo, resources and the plugin's name."""
    answer = pb.AskResponse(responseword=pb.YES)
    for i in range(offers):
        offer = answer.offers.add(servicetype=f"uri://synthetic-service-{i}", plugin=f"p{i}")
        offer.serviceinfo.update(
            {"endpoint": f"http://127.0.0.1:{9000 + i}/run", "image": "docker.io/example:1.0"}
        )
        offer.resources.cores.max = 2
    return answer


def _ask_handler(answer: pb.AskResponse, *, aio: bool) -> grpc.GenericRpcHandler:
    """The Ask method, answering ``answer`` to every request (each decoded).
    grpc.aio runs a coroutine in its event loop (a plain function would go to
    a thread pool); grpc.server calls a plain function in its own pool."""

    async def ask_aio(request: pb.AskRequest, context: object) -> pb.AskResponse:
        return answer

    def ask_sync(request: pb.AskRequest, context: object) -> pb.AskResponse:
        return answer

    handler = grpc.unary_unary_rpc_method_handler(
        ask_aio if aio else ask_sync,
        request_deserializer=pb.AskRequest.FromString,
        response_serializer=pb.AskResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, {ASK_NAME: handler})


async def start(listen: str, answer: pb.AskResponse) -> tuple[grpc.aio.Server, int]:
    """A started bare grpc.aio server answering ``answer`` to every Ask, and its port."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((_ask_handler(answer, aio=True),))
    port = server.add_insecure_port(listen)
    await server.start()
    return server, port


async def main(listen: str, offers: int) -> None:
    server, port = await start(listen, fixed_answer(offers))
    print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    await server.wait_for_termination()


def main_sync(listen: str, threads: int, offers: int) -> None:
    server = grpc.server(ThreadPoolExecutor(threads), options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((_ask_handler(fixed_answer(offers), aio=False),))
    port = server.add_insecure_port(listen)
    server.start()
    print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default=LOOPBACK)
    parser.add_argument("--sync", action="store_true", help="thread-pool grpc.server")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--offers", type=int, default=1, help="offers in the fixed answer")
    args = parser.parse_args()
    if args.sync:
        main_sync(args.listen, args.threads, args.offers)
    else:
        asyncio.run(main(args.listen, args.offers))
