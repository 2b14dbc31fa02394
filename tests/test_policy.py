"""Site policy on a real server: an ``ep_policy`` plugin refuses by the
caller's groups, with a POLICY reason, before any plugin evaluates the task.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest
from live_server import DOCKER, TOKEN, Recorder, Start, ask, bearer, servers, tokens_file

from ep_server import Cause, Reason, TaskQuery, hookimpl
from ep_server.pb import execution_planner_pb2 as pb


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    async with servers() as run:
        yield run


class AstroOnly:
    """Site policy: docker tasks only for members of the astro group."""

    @hookimpl
    def ep_policy(self, query: TaskQuery):
        if query.tasktype == DOCKER and "astro" not in query.identity.groups:
            return Reason("GROUP_REQUIRED", "docker tasks are for the astro group", Cause.POLICY)
        return None


async def test_a_policy_plugin_refuses_by_group(tmp_path, start):
    digest = hashlib.sha256(b"carol-token-0123456789abcdef-xyz").hexdigest()
    path = tokens_file(tmp_path)
    path.write_text(path.read_text() + f'[tokens.carol]\ntoken_sha256 = "{digest}"\n')
    recorder = Recorder()
    _, stub = await start({"auth": {"tokens_file": str(path)}}, recorder, AstroOnly())
    assert (await stub.Ask(ask(), metadata=bearer(TOKEN), timeout=10)).responseword == pb.YES
    carol = await stub.Ask(ask(), metadata=bearer("carol-token-0123456789abcdef-xyz"), timeout=10)
    assert carol.responseword == pb.NO
    assert [(r.code, r.cause, r.plugin) for r in carol.reasons] == [
        ("GROUP_REQUIRED", pb.REASON_CAUSE_POLICY, "p1")
    ]
    assert len(recorder.identities) == 1  # refused before any plugin evaluated
