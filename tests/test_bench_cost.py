"""bench/cost.py's parts, quickly: the varying requests, the raw HTTP/2 load
generator against a real bare server, the check that a server runs the
tree it should, and bench/pieces.py on a handful of requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import asks, pieces, rawload
from bench.cost import CHECKED_MODULES, stray_files, tree_path
from bench.harness import LISTENING, ROOT, ServerProcess, python_m
from ep_server.pb import execution_planner_pb2 as pb


@pytest.mark.parametrize("kind", asks.KINDS)
def test_every_request_of_a_set_is_distinct_and_decodes(kind: str) -> None:
    messages = asks.requests(kind, 500)
    assert len(set(messages)) == 500
    first = pb.AskRequest.FromString(messages[0])
    assert first.tasktype == asks.TASKTYPES[kind]
    assert first.resources.cores.min >= 1


def test_framed_requests_read_back(tmp_path: Path) -> None:
    messages = asks.requests("docker", 20)
    asks.write_framed(tmp_path / "r.grpc", messages)
    assert list(asks.read_framed(tmp_path / "r.grpc")) == [asks.framed(m) for m in messages]


@pytest.fixture(scope="module")
def bare() -> object:
    server = ServerProcess.start(python_m("bench.bare", "--offers", "4"), LISTENING)
    yield server
    server.stop()


def test_rawload_counts_only_the_answers_it_expects(bare: ServerProcess) -> None:
    messages = [asks.framed(m) for m in asks.requests("synthetic", 50)]
    good = rawload.run(bare.ready[1], messages, 10, 4, 10.0, 120, offers=4)
    assert (good["calls"], good["errors"], good["next"]) == (120, {}, 30)
    assert good["p50_ms"] is not None
    assert good["cpu_us"] > 0
    wrong = rawload.run(bare.ready[1], messages, 0, 4, 10.0, 40, offers=1)
    assert (wrong["calls"], wrong["errors"]) == (0, {"wrong answer": 40})


def test_rawload_counts_a_refused_call_by_its_status(bare: ServerProcess) -> None:
    # The bare server knows only Ask's method; a message it cannot decode fails.
    undecodable = asks.framed(b"\xff\xff\xff")
    result = rawload.run(bare.ready[1], [undecodable], 0, 2, 10.0, 6, offers=4)
    assert result["calls"] == 0
    assert sum(result["errors"].values()) == 6
    assert "wrong answer" not in result["errors"]


def test_a_server_importing_another_tree_is_caught(tmp_path: Path) -> None:
    here = {m: str(ROOT / m.replace(".", "/") / "__init__.py") for m in CHECKED_MODULES}
    assert stray_files(here, ROOT) == {}
    assert set(stray_files(here, tmp_path)) == set(CHECKED_MODULES)
    assert stray_files({}, ROOT) == dict.fromkeys(CHECKED_MODULES, "(not imported)")
    assert str(tmp_path / "tests") in tree_path(tmp_path).split(":")


def test_pieces_are_measured_and_answered_right() -> None:
    measured = pieces.measure_tree(ROOT, 90, 2)
    assert set(measured) == set(pieces.PIECES)
    for name, values in measured.items():
        assert len(values) == 2, name
        assert all(v > 0 for v in values), (name, values)
