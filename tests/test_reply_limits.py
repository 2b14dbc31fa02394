"""What the server sends back fits gRPC's default limits, however bad the
request, through a real server.

An INVALID_ARGUMENT's details travel in trailing metadata, which gRPC clients
cap (8 KiB soft, 16 KiB hard): ep_server.errors details at most
``MAX_VIOLATIONS`` fields and cuts long ones, so thousands of bad values under
huge keys still give a readable INVALID_ARGUMENT. A plugin that finds tens of
thousands of problems still gives a verdict: the planner keeps a bounded
number of reasons per plugin.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import grpc
import pytest
from request_generation.encoding import Ask
from request_generation.harness import Harness, serving


@pytest.fixture(scope="module")
def ep() -> Iterator[Harness]:
    with serving("reply limits") as harness:
        yield harness


@pytest.mark.parametrize(
    "taskinfo",
    [
        pytest.param({"k" * 8000: math.nan}, id="nan-under-an-8000-char-key"),
        pytest.param({"é" * 2000: math.inf}, id="inf-under-a-2000-char-unicode-key"),
        pytest.param({"l": [math.nan] * 400}, id="400-nans"),
    ],
)
def test_error_details_fit_default_metadata_limits(ep, taskinfo):
    outcome = ep.send(Ask("uri://docker-container", taskinfo).encode())
    ep.assert_healthy()
    assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT, (outcome.code, outcome.details)
    assert outcome.violations


def test_many_bad_list_items_still_get_a_verdict(ep):
    outcome = ep.send(
        Ask("uri://docker-container", {"image": "a", "ports": [True] * 60000}).encode()
    )
    ep.assert_healthy()
    assert outcome.code is grpc.StatusCode.OK, (outcome.code, outcome.details)
