"""``python -m tools.cluster``: its signals and what it prints (the whole
run is in test_cluster.py)."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from tools.cluster.__main__ import StopRequested, instructions, main, stop_on_signals
from tools.cluster.cluster import State


@pytest.fixture
def saved_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.usefixtures("saved_handlers")
def test_ctrl_c_stops_it_even_when_started_as_a_background_job() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell does for `cmd &`
    stop_on_signals()
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    with pytest.raises(StopRequested):
        signal.raise_signal(signal.SIGTERM)


def test_it_prints_how_to_ask_and_book_and_where_everything_is() -> None:
    state = State(
        balancer="127.0.0.1:8080",
        replicas=[
            {"name": f"replica-{i}", "address": f"127.0.0.1:{5000 + i}", "pid": 1,
             "metrics": f"http://127.0.0.1:{6000 + i}/metrics", "log": f"/l/replica-{i}.log"}
            for i in (1, 2)
        ],
        postgres={"dsn": "postgresql://ep@127.0.0.1:5432/ep", "pid": 1, "log": "/l/postgres.log"},
        haproxy={"version": "2.6.12", "pid": 1, "config": "/d/haproxy.cfg",
                 "stats_socket": "/d/haproxy.sock", "log": "/l/haproxy.log"},
        token_file="/d/token",
        folder="/d",
        logs="/l",
    )  # fmt: skip
    text = instructions(state)
    assert "2 replicas behind HAProxy 2.6.12 on 127.0.0.1:8080" in text
    assert "--endpoint 127.0.0.1:8080" in text
    assert "accept 127.0.0.1:8080 OFFER_ID --token-file /d/token" in text
    assert "--endpoint 127.0.0.1:5001,127.0.0.1:5002" in text
    assert "replica-2: 127.0.0.1:5002, metrics http://127.0.0.1:6002/metrics" in text
    assert text.endswith("Ctrl-C stops everything and removes /d.")


@pytest.mark.parametrize("replicas", ["0", "17"])
def test_the_replica_count_is_checked(replicas: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--replicas", replicas])
    assert info.value.code == 2
    assert "--replicas must be from 1 to 16" in capsys.readouterr().err
