"""The built-in static plugin, through the registry and planner."""

from __future__ import annotations

import pytest

from ep_server import Cause, HostInfo, IntRange, Resources, TaskQuery
from ep_server.builtins import static
from ep_server.planner import Planner
from ep_server.plugins import PluginCaller

DOCKER = "uri://docker-container"
GiB = 1024**3


def claim(**extra):
    return {
        "tasktype": DOCKER,
        "servicetype": "uri://docker-uws",
        "serviceinfo": {"endpoint": "e"},
        **extra,
    }


@pytest.fixture
def ask(registry_of):
    planners = []

    async def run(claims, resources=None):
        registry = registry_of({"plugin": {"static": {"claims": claims}}}, static=static)
        planners.append(Planner(registry, PluginCaller(deadline=1.0)))
        return await planners[-1].ask(TaskQuery(DOCKER, {}, resources or Resources()))

    yield run
    for planner in planners:
        planner.caller.close()


async def test_offers_each_claim(ask):
    answer = await ask([claim(), claim(servicetype="uri://rosetta-rest-api")])
    assert [o.servicetype for _, o in answer.offers] == [
        "uri://docker-uws",
        "uri://rosetta-rest-api",
    ]
    assert answer.offers[0][1].serviceinfo == {"endpoint": "e"}


async def test_a_minimum_above_the_limit_is_a_capacity_no(ask):
    answer = await ask([claim(cores=4, memory="1GiB")], Resources(IntRange(5), IntRange(2 * 2**30)))
    assert not answer.yes
    reasons = {r.field: r for _, r in answer.reasons}
    assert set(reasons) == {"resources.cores.min", "resources.memory.min"}
    assert reasons["resources.cores.min"].code == "INSUFFICIENT_CORES"
    assert reasons["resources.cores.min"].cause is Cause.CAPACITY


async def test_the_messages_say_what_this_service_offers(ask):
    declined = await ask([claim(cores=4)], Resources(IntRange(5)))
    [(_, reason)] = declined.reasons
    assert reason.message == "asked for at least 5 of cores; this service offers at most 4"
    capped = await ask([claim(memory="1GiB")], Resources(memory=IntRange(1, 2 * GiB)))
    [(_, offer)] = capped.offers
    assert offer.message == f"memory capped at the limit of {GiB} bytes"


async def test_a_minimum_at_the_limit_fits(ask):
    answer = await ask([claim(cores=4)], Resources(IntRange(4)))
    assert answer.offers[0][1].resources.cores == IntRange(4, 4)


async def test_a_maximum_above_the_limit_is_capped_with_a_message(ask):
    answer = await ask([claim(cores=4)], Resources(IntRange(1, 16)))
    [(_, offer)] = answer.offers
    assert offer.resources.cores == IntRange(1, 4)
    assert "capped" in offer.message


async def test_host_limits_follow_the_host(ask, host):
    answer = await ask([claim(cores="host", memory="host")])
    [(_, offer)] = answer.offers
    assert offer.resources == Resources(IntRange(None, host.cores), IntRange(None, host.memory))


async def test_one_claim_may_fit_when_another_does_not(ask):
    answer = await ask(
        [claim(cores=2), claim(servicetype="uri://big", cores=64)], Resources(IntRange(8))
    )
    assert [o.servicetype for _, o in answer.offers] == ["uri://big"]
    assert [r.code for _, r in answer.reasons] == ["INSUFFICIENT_CORES"]


@pytest.mark.parametrize("memory", [IntRange(), IntRange(GiB)])
async def test_host_memory_the_ep_could_not_detect_is_no_limit(memory):
    undetected = HostInfo(cores=4, memory=0, architecture="x86_64", os="linux")
    config = static.ep_configure({"claims": [claim(cores="host", memory="host")]}, undetected)
    verdict = await static.ep_evaluate(TaskQuery(DOCKER, {}, Resources(memory=memory)), config)
    [offer] = verdict.offers
    assert offer.resources == Resources(IntRange(None, 4), memory)
