"""The HTTP door: an aiohttp application on the servicer and the pipeline.

Why aiohttp: its server runs on the event loop that is already running
(grpc.aio's), started and stopped with ``AppRunner``/``TCPSite`` like any
other coroutine, so one process has one loop and one shutdown; it parses
HTTP/1.1 in C (llhttp), reads multipart bodies itself, and takes an
``ssl.SSLContext`` for TLS and client certificates. An ASGI stack would
need a server (uvicorn, hypercorn) that wants to own the loop and its
signals.

Every REST route comes from the proto's ``google.api.http`` rules
(:mod:`~ep_server.http.routes`); each is served by one generic handler that
builds the request message (:mod:`ep_server.wire.http_json`) and runs the
RPC's servicer method through the same :class:`~ep_server.pipeline.CallPipeline`
as gRPC: the same request id (sent back as ``x-request-id``), credentials,
admission and rate limits, metrics and access log. Errors, including a
path that does not exist or a method it does not take, are
``google.rpc.Status`` JSON with AIP-193's HTTP status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from google.protobuf.message import Message

from ep_server.auth import subject_from_der_certificate
from ep_server.errors import EPError, FieldViolation, InvalidArgument, NotFound
from ep_server.http.routes import RestRoute, rest_routes
from ep_server.logs import REQUEST_ID
from ep_server.metrics import Metrics
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.pipeline import REQUEST_ID_KEY, Call, CallPipeline, request_id_of
from ep_server.servicer import SERVICE, ExecutionPlannerServicer
from ep_server.wire import http_json

__all__ = [
    "PIPELINED",
    "BodyTooLarge",
    "Door",
    "HttpCall",
    "UnsupportedMediaType",
    "build_app",
    "early_body",
    "error_response",
    "json_response",
    "read_body",
    "read_body_early",
]

log = logging.getLogger(__name__)
access = logging.getLogger("ep_server.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The route label of a request no route matched (metrics, logs).
UNMATCHED = "unmatched"
_JSON = "application/json"
#: Request headers a browser page may send when CORS lets it.
_CORS_HEADERS = "authorization, content-type, x-request-id"


@dataclass(frozen=True)
class Door:
    """What the HTTP handlers share: the RPCs and the policy around them."""

    servicer: ExecutionPlannerServicer
    pipeline: CallPipeline
    metrics: Metrics | None = None
    #: Deepest nesting of a JSON body (the taskinfo limit plus the fields
    #: around it), checked before protobuf's recursive parser sees it.
    max_json_depth: int = 32 + http_json.JSON_DEPTH_SLACK
    max_body_bytes: int = 4 * 1024 * 1024
    cors_origins: tuple[str, ...] = ()
    #: Whether the transport verifies client certificates (``[tls] client_ca``).
    mtls: bool = False


class HttpCall:
    """An HTTP request as the pipeline sees it (:class:`~ep_server.pipeline.Inbound`)."""

    __slots__ = ("_mtls", "request", "request_id")

    transport = "http"

    def __init__(self, request: web.Request, mtls: bool = False) -> None:
        self.request = request
        self.request_id = ""
        self._mtls = mtls

    @property
    def metadata(self) -> Sequence[tuple[str, str | bytes]]:
        return [(key.lower(), value) for key, value in self.request.headers.items()]

    def peer(self) -> str:
        """The client's address as gRPC writes it (``ipv4:127.0.0.1:5555``,
        ``ipv6:[::1]:5555``), so that limits count HTTP and gRPC callers
        from one address as one."""
        transport = self.request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        if not peer:
            return "unknown"
        host, port = peer[0], peer[1]
        return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"

    def peer_subject(self) -> str | None:
        """The subject DN of the client certificate that TLS verified, in
        the form gRPC gives it, so that one certificate is one identity on
        both doors."""
        if not self._mtls:
            return None
        transport = self.request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_object is None:
            return None
        der = ssl_object.getpeercert(binary_form=True)
        return subject_from_der_certificate(der) if der else None

    def time_remaining(self) -> float | None:
        return None


def json_response(body: bytes, request_id: str, status: int = 200) -> web.Response:
    response = web.Response(body=body, status=status, content_type=_JSON)
    if request_id:
        response.headers[REQUEST_ID_KEY] = request_id
    return response


def error_response(exc: EPError, request_id: str = "") -> web.Response:
    """``exc`` as ``google.rpc.Status`` JSON with its HTTP status."""
    status, body = http_json.error_json(exc)
    response = json_response(body, request_id, getattr(exc, "http_status", None) or status)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, round(retry_after + 0.49)))
    if response.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="ep-server"'
    return response


class UnsupportedMediaType(EPError):
    """A request body in a form the route does not read (HTTP 415)."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "UNSUPPORTED_MEDIA_TYPE"
    http_status = 415

    def __init__(self, what: str, got: str, wanted: str) -> None:
        super().__init__(
            f"the {what} body is {got or 'of no stated type'}; send {wanted}",
            metadata={"content_type": got, "accepted": wanted},
        )


class _MethodNotAllowed(EPError):
    code = grpc.StatusCode.UNIMPLEMENTED
    reason = "METHOD_NOT_ALLOWED"
    http_status = 405


class BodyTooLarge(EPError):
    """A request body past ``[http] max_body_bytes`` (HTTP 413). The code is
    gRPC's for a message past its limit; unlike a rate limit, waiting does
    not help, so it carries no Retry-After."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "BODY_TOO_LARGE"
    http_status = 413

    def __init__(self, limit: int | None = None) -> None:
        what = f" ({limit} bytes)" if limit else ""
        super().__init__(f"the request body is larger than this site accepts{what}")


@dataclass(frozen=True, slots=True)
class _Raw:
    """An HTTP request's parts, before the request message is built."""

    http: web.Request
    path: Mapping[str, str]
    #: The body, read before the pipeline admits the call (as gRPC reads a
    #: whole message first), so that a client slow to send it holds no
    #: call slot; None for a route without a body.
    body: bytes | None = None
    #: Why the body could not be read (415, 413): raised in the pipeline,
    #: so that it is counted and logged like any other refusal.
    unreadable: EPError | None = None


def _rpc_handler(door: Door, route: RestRoute) -> Handler:
    """The handler of one REST route: build the request, run the RPC."""
    request_type: type[Message] = getattr(pb, route.request)
    method = getattr(door.servicer, route.rpc)
    variables = route.variables
    has_body = route.body != ""
    if route.body not in ("", "*"):
        raise ValueError(f"{route.rpc}: a body bound to one field is not served yet")
    pipeline, name, what = door.pipeline, route.rpc, route.request

    async def run(raw: _Raw, call: Call) -> Any:
        if raw.unreadable is not None:
            raise raw.unreadable
        query = list(raw.http.query.items())
        if has_body and query:  # body "*": the body is the whole request
            found = [
                FieldViolation(name, "is not read: the body carries the request")
                for name, _ in query
            ]
            raise InvalidArgument(what, found)
        message = http_json.request_from_http(
            request_type, what, raw.body, raw.path, query, door.max_json_depth
        )
        return await method(message, call)

    async def handle(request: web.Request) -> web.StreamResponse:
        call = HttpCall(request, door.mtls)
        request[PIPELINED] = True
        path = {field: request.match_info[var] for var, field in variables}
        raw = _Raw(request, path)
        if has_body:
            try:
                raw = _Raw(request, path, await _json_body(request, what))
            except EPError as exc:
                raw = _Raw(request, path, None, exc)
        try:
            response = await pipeline.run(name, call, run, raw)
        except EPError as exc:
            return error_response(exc, call.request_id)
        return json_response(http_json.message_json(response), call.request_id)

    handle.__name__ = route.rpc
    return handle


async def _json_body(request: web.Request, what: str) -> bytes | None:
    """The body of a JSON request; None when empty. Refuses other types
    (415) and bodies past the limit (413)."""
    if request.body_exists:
        kind = request.content_type
        if kind != _JSON and not kind.endswith("+json"):
            raise UnsupportedMediaType(what, kind, _JSON)
    return await read_body(request)


#: A body read before its call was admitted (:func:`read_body_early`), or
#: why it could not be read.
_EARLY_BODY = web.RequestKey("ep_early_body", object)


async def read_body_early(request: web.Request) -> None:
    """Read the whole body before the call is admitted, as gRPC reads a
    whole message before its handler runs: a client stalled mid-body holds
    no call slot. A body that cannot be read is refused inside the
    pipeline, by :func:`early_body`, so that credentials are checked
    first and the refusal is counted and logged like any other."""
    try:
        request[_EARLY_BODY] = await read_body(request)
    except EPError as exc:
        request[_EARLY_BODY] = exc


def early_body(request: web.Request) -> bytes:
    """The body :func:`read_body_early` read, or its error, raised."""
    body = request[_EARLY_BODY]
    if isinstance(body, EPError):
        raise body
    assert isinstance(body, bytes)
    return body


async def read_body(request: web.Request) -> bytes:
    """The whole body, or 413 past the door's limit, or 400 for a body that
    cannot be read (one its ``Content-Encoding`` does not decode)."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise BodyTooLarge(request.app[DOOR].max_body_bytes) from exc
    except RequestPayloadError as exc:
        # The connection cannot carry another request: the answer closes it
        # (the middleware sees to it), and aiohttp is done with the body,
        # which it would else drain after the answer, raising the error
        # again and logging it as an unhandled exception.
        request[_CLOSE] = True
        request.content.feed_eof()
        cause = exc.__cause__ or exc
        why = " ".join(str(getattr(cause, "message", cause)).split())  # aiohttp's, without "400, "
        raise InvalidArgument("request", [FieldViolation("", f"cannot be read: {why}")]) from None


DOOR = web.AppKey("door", Door)
_ROUTE_LABEL = "route_label"


def build_app(door: Door, extra: Sequence[tuple[str, str, Handler]] = ()) -> web.Application:
    """The HTTP application: every REST route of the proto's rules, and
    ``extra`` routes (method, path, handler) beside them."""
    app = web.Application(
        client_max_size=door.max_body_bytes,
        middlewares=[_middleware(door)],
        handler_args={"access_log": None},
    )
    app[DOOR] = door
    app[_LABELS] = {}
    for route in rest_routes(SERVICE):
        _add(
            app,
            route.method,
            route.path,
            _rpc_handler(door, route),
            f"{route.method} {route.template}",
        )
    for method, path, handler in extra:
        _add(app, method, path, handler, f"{method} {path}")
    return app


def _add(app: web.Application, method: str, path: str, handler: Handler, label: str) -> None:
    route = app.router.add_route(method, path, handler)
    app[_LABELS][route] = label
    if method == "GET":  # HEAD wherever GET (RFC 9110); aiohttp sends no body
        head = app.router.add_route("HEAD", path, handler)
        app[_LABELS][head] = "HEAD" + label.removeprefix("GET")


#: Route -> its metrics and log label (the template, never a client's path).
_LABELS = web.AppKey("labels", dict)
#: Set on a request whose handler ran an RPC through the pipeline, which
#: writes its access log line.
PIPELINED = web.RequestKey("ep_pipelined", bool)
#: Set on a request whose body could not be read: its answer closes the connection.
_CLOSE = web.RequestKey("ep_close", bool)


def _middleware(door: Door) -> Any:
    metrics = door.metrics
    origins = door.cors_origins

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        route = request.match_info.route
        label = request.app[_LABELS].get(route, UNMATCHED)
        cors = _cors_origin(request, origins)
        if (
            cors is not None
            and request.method == "OPTIONS"
            and "Access-Control-Request-Method" in request.headers
        ):
            response: web.StreamResponse = _preflight(request, cors)
            label = "OPTIONS (CORS preflight)"
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                response = _http_error(exc, request)
            if request.get(_CLOSE):
                response.force_close()
        if cors is not None:
            response.headers["Access-Control-Allow-Origin"] = cors
            response.headers["Access-Control-Expose-Headers"] = f"{REQUEST_ID_KEY}, retry-after"
        if origins and "*" not in origins:
            # The answer depends on the Origin header: say so to caches,
            # on the answers without Access-Control-Allow-Origin too.
            response.headers.add("Vary", "Origin")
        seconds = time.perf_counter() - started
        if metrics is not None:
            metrics.http(label, response.status, seconds)
        if not request.get(PIPELINED):  # no RPC ran, so no id was given
            request_id = request_id_of([(k.lower(), v) for k, v in request.headers.items()])
            if not response.prepared:
                response.headers[REQUEST_ID_KEY] = request_id
            _log_access(door, request, label, response.status, seconds, request_id)
        return response

    return middleware


def _cors_origin(request: web.Request, allowed: tuple[str, ...]) -> str | None:
    """The Access-Control-Allow-Origin value for this request, or None
    when CORS is off or the page's origin is not allowed."""
    origin = request.headers.get("Origin")
    if not allowed or origin is None:
        return None
    if "*" in allowed:
        return "*"
    return origin if origin in allowed else None


def _preflight(request: web.Request, origin: str) -> web.Response:
    response = web.Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    response.headers["Access-Control-Allow-Headers"] = _CORS_HEADERS
    response.headers["Access-Control-Max-Age"] = "600"
    return response


def _http_error(exc: web.HTTPException, request: web.Request) -> web.Response:
    """aiohttp's own refusals (no such path, a method the path does not
    take, a body too large) as ``google.rpc.Status`` JSON."""
    error: EPError
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        error = _MethodNotAllowed(
            f"{request.method} is not allowed on {request.path}; use {allowed}"
        )
        response = error_response(error)
        response.headers["Allow"] = allowed
        return response
    if isinstance(exc, web.HTTPNotFound):
        error = NotFound(f"no route {request.path}", reason="NO_SUCH_ROUTE")
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        error = BodyTooLarge()
    else:
        error = EPError(exc.reason)
        error.code = _CODE_OF_HTTP.get(exc.status, grpc.StatusCode.UNKNOWN)
        error.http_status = exc.status  # type: ignore[attr-defined]
    return error_response(error)


_CODE_OF_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def _log_access(
    door: Door, request: web.Request, label: str, status: int, seconds: float, request_id: str
) -> None:
    """The access log line of a request that ran no RPC (an RPC's own line
    is the pipeline's)."""
    if not door.pipeline.access_log:
        return
    token = REQUEST_ID.set(request_id)  # the log line's request_id
    try:
        access.info(
            "%s %s %d %.1fms",
            request.method,
            label,
            status,
            seconds * 1000,
            extra={
                "route": label,
                "http_status": status,
                "ms": seconds * 1000,
                "transport": "http",
            },
        )
    finally:
        REQUEST_ID.reset(token)
