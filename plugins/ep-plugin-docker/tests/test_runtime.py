"""The optional container-runtime check: a Unix socket that must accept."""

from __future__ import annotations

import asyncio
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ep_plugin_docker import reasons as R
from ep_plugin_docker.runtime import check_runtime
from ep_server import Cause


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Unix socket paths are limited to ~107 bytes: pytest's tmp_path may be longer.
    with tempfile.TemporaryDirectory(prefix="epd") as name:
        yield Path(name)


@pytest.fixture
def listening(short_dir: Path) -> Iterator[str]:
    path = str(short_dir / "runtime.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(8)
        yield path


def test_a_listening_socket_is_a_reachable_runtime(listening: str) -> None:
    assert asyncio.run(check_runtime(listening, 1.0)) is None


def test_an_absent_socket_is_a_retryable_capacity_reason(short_dir: Path) -> None:
    missing = str(short_dir / "docker.sock")
    reason = asyncio.run(check_runtime(missing, 1.0))
    assert reason is not None
    assert (reason.code, reason.cause, reason.retryable) == (
        R.RUNTIME_UNAVAILABLE,
        Cause.CAPACITY,
        True,
    )
    assert missing in reason.message
    assert "No such file" in reason.message


def test_a_socket_nobody_listens_on_is_unavailable(short_dir: Path) -> None:
    path = str(short_dir / "dead.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
        bound.bind(path)  # bound, never listening: connections are refused
        reason = asyncio.run(check_runtime(path, 1.0))
    assert reason is not None
    assert reason.code == R.RUNTIME_UNAVAILABLE


def test_a_regular_file_is_not_a_runtime(short_dir: Path) -> None:
    path = short_dir / "not-a-socket"
    path.write_text("")
    reason = asyncio.run(check_runtime(str(path), 1.0))
    assert reason is not None
    assert reason.code == R.RUNTIME_UNAVAILABLE


def test_a_runtime_that_never_answers_times_out_without_stalling_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def never(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(3600)

    monkeypatch.setattr(asyncio, "open_unix_connection", never)

    async def check_while_ticking() -> tuple[Any, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        reason = await asyncio.wait_for(check_runtime("/nowhere.sock", 0.2), 5)
        ticker.cancel()
        return reason, ticks

    reason, ticks = asyncio.run(check_while_ticking())
    assert reason is not None
    assert reason.code == R.RUNTIME_UNAVAILABLE
    assert "no answer within 0.2s" in reason.message
    assert ticks >= 5  # the loop kept running while the check waited
