"""The running EP, a raw ``Ask`` and the checks every answer must pass.

Every answer must be a verdict (OK with YES and at least one offer, or NO
with at least one reason) or INVALID_ARGUMENT with ``google.rpc.BadRequest``
details naming the bad fields; never UNKNOWN, INTERNAL, a hang (every call has
a deadline, and DEADLINE_EXCEEDED fails the test) or a dropped connection.
At most ``MAX_VIOLATIONS`` fields are detailed in one INVALID_ARGUMENT (see
ep_server.errors), which :meth:`Harness.ask` allows for.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import event

from ep_server.config import Settings, load_settings
from ep_server.errors import MAX_VIOLATIONS
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.testing import EPTestServer, build_registry
from request_generation.encoding import Ask
from request_generation.oracle import expected_violations

ASK = "/ivoa.ep.v1.ExecutionPlannerService/Ask"
#: Every call's deadline. The default per-plugin deadline is 2 s, so a call
#: that is not answered in 10 s is a hang.
CALL_TIMEOUT = 10.0
#: gRPC's default receive limit, on the server as on the client.
MAX_MESSAGE = 4 * 1024 * 1024


@dataclass
class Outcome:
    code: grpc.StatusCode
    response: pb.AskResponse | None = None
    violations: list[tuple[str, str]] = field(default_factory=list)
    details: str = ""


class Harness:
    """The running EP, a raw ``Ask`` and the checks every answer must pass."""

    def __init__(self) -> None:
        # Free loopback ports, not the default HTTP port 8080 that another
        # server may hold.
        overrides = {"server.listen": "127.0.0.1:0", "http.listen": "127.0.0.1:0"}
        if "schedule" in Settings.model_fields:
            # Time-slot offers are held in a ledger; by default a file in the
            # user's state directory, which a test must not write to.
            overrides["schedule.ledger"] = ":memory:"
        self.settings = load_settings(environ={}, overrides=overrides)
        self.server = EPTestServer(self.settings, build_registry(self.settings))
        self.raw_ask = self.server.channel.unary_unary(
            ASK, request_serializer=None, response_deserializer=None
        )
        self.health = health_pb2_grpc.HealthStub(self.server.channel)
        self.counts: Counter[str] = Counter()

    def send(self, data: bytes) -> Outcome:
        assert len(data) < MAX_MESSAGE, "keep generated requests under the 4 MiB limit"
        try:
            answer = self.raw_ask(data, timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:
            return self._failed(error)
        self.counts["OK"] += 1
        return Outcome(grpc.StatusCode.OK, pb.AskResponse.FromString(answer))

    def send_async(self, data: bytes) -> Any:
        return self.raw_ask.future(data, timeout=CALL_TIMEOUT)

    def result(self, future: Any) -> Outcome:
        try:
            answer = future.result()
        except grpc.RpcError as error:
            return self._failed(error)
        self.counts["OK"] += 1
        return Outcome(grpc.StatusCode.OK, pb.AskResponse.FromString(answer))

    def _failed(self, error: Any) -> Outcome:
        code = error.code()
        self.counts[code.name] += 1
        outcome = Outcome(code, details=error.details() or "")
        status = rpc_status.from_call(error)
        for detail in status.details if status else ():
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                outcome.violations += [(v.field, v.description) for v in bad.field_violations]
        return outcome

    def check(self, outcome: Outcome, what: Any, *, named_field: bool = True) -> None:
        """A verdict, or INVALID_ARGUMENT with BadRequest naming a field."""
        assert outcome.code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (
            f"{outcome.code.name} ({outcome.details[:300]!r}) for {what!r}"
        )
        if outcome.code is grpc.StatusCode.OK:
            answer = outcome.response
            assert answer is not None
            assert answer.responseword in (pb.YES, pb.NO), what
            if answer.responseword == pb.YES:
                assert answer.offers, f"a YES without offers for {what!r}"
            else:
                assert not answer.offers, what
                assert answer.reasons, f"a NO without reasons for {what!r}"
            assert all(r.code for r in answer.reasons), answer
        else:
            assert outcome.violations, f"INVALID_ARGUMENT without BadRequest for {what!r}"
            if named_field:
                assert any(f for f, _ in outcome.violations), (outcome.violations, what)

    def ask(self, ask: Ask) -> Outcome:
        """Send ``ask`` and hold the answer to the oracle."""
        expect = expected_violations(ask)
        outcome = self.send(ask.encode())
        self.check(outcome, ask)
        named = {f for f, _ in outcome.violations}
        if expect.must_name:
            assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT, (outcome, ask)
            missing = expect.must_name - named
            # Only the first MAX_VIOLATIONS are detailed, then "and N more".
            cut = any(not f and d.startswith("and ") for f, d in outcome.violations)
            if cut or len(expect.must_name) > MAX_VIOLATIONS:
                assert len(named - {""}) >= MAX_VIOLATIONS, (outcome.violations, ask)
            else:
                assert not missing, (
                    f"{sorted(missing)} not named in {outcome.violations} for {ask!r}"
                )
        if expect.must_answer:
            assert outcome.code is grpc.StatusCode.OK, (outcome.violations, ask)
        event(outcome.code.name)
        return outcome

    def assert_healthy(self) -> None:
        answer = self.health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        seed = Ask("uri://docker-container", {"image": "docker.io/example:1.0"})
        outcome = self.send(seed.encode())
        assert outcome.code is grpc.StatusCode.OK
        assert outcome.response is not None
        assert outcome.response.responseword == pb.YES


@contextmanager
def serving(name: str) -> Iterator[Harness]:
    """A healthy in-process :class:`Harness`; on leaving, prints how the Ask
    calls made under ``name`` ended, and stops the server."""
    harness = Harness()
    harness.assert_healthy()
    yield harness
    total = sum(harness.counts.values())
    print(f"\n{name}: {total} Ask calls: {dict(harness.counts)}")
    harness.server.close()


class ProcessHarness(Harness):
    """The same checks against ``ep-server serve`` in its own process, so
    that its memory is the server's alone (not pytest's, whose log capture
    and other tests' leftovers live in this process)."""

    def __init__(self) -> None:
        with socket.socket() as probe:  # a free loopback port
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        env = {**os.environ, "EP_SCHEDULE__LEDGER": ":memory:"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ep_server", "serve", "--listen", f"127.0.0.1:{self.port}"],
            env=env, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.raw_ask = self.channel.unary_unary(
            ASK, request_serializer=None, response_deserializer=None
        )
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.counts = Counter()
        grpc.channel_ready_future(self.channel).result(timeout=30)

    def close(self) -> None:
        self.channel.close()
        self.proc.terminate()
        self.proc.communicate(timeout=30)
