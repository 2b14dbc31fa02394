"""The registry: frozen once built, one typed method per hook."""

from __future__ import annotations

import dataclasses

import pytest
from fake_plugins.common import Offering

from ep_server import Claim, Reason, Verdict, hookimpl

DOCKER = "uri://docker-container"


class Scheduling(Offering):
    """Offers, and implements every per-plugin hook."""

    @hookimpl
    def ep_resources(self, query):
        return {"cores": 2}

    @hookimpl
    def ep_slot(self, slot, query):  # the arguments in another order than the spec's
        return Reason("NIGHT", f"{slot} {query}")

    @hookimpl
    async def ep_booked(self, booking):
        return None

    @hookimpl
    def ep_cancelled(self):  # takes none of its arguments
        return "ignored"


def test_each_hook_has_a_method_and_the_implementation_is_bound(registry_of):
    registry = registry_of(
        config={"plugin": {}}, s=Scheduling("uri://svc", DOCKER), o=Offering("uri://o", DOCKER)
    )
    assert [i.plugin for i in registry.ep_evaluate(DOCKER)] == ["o", "s"]
    resources = registry.ep_resources("s")
    slot = registry.ep_slot("s")
    booked, cancelled = registry.ep_booked("s"), registry.ep_cancelled("s")
    assert resources is not None
    assert slot is not None
    assert booked is not None
    assert cancelled is not None
    assert (resources.hook, slot.hook, booked.hook, cancelled.hook) == (
        "ep_resources", "ep_slot", "ep_booked", "ep_cancelled",
    )  # fmt: skip
    assert resources.function("query") == {"cores": 2}
    assert slot.function("query", "slot").message == "slot query"  # per-call order, by name
    assert cancelled.function("booking") == "ignored"
    assert booked.is_async
    assert not slot.is_async
    assert registry.ep_slot("o") is None
    assert registry.implementers("ep_slot") == frozenset({"s"})


def test_the_registry_cannot_change_once_built(registry_of):
    registry = registry_of(o=Offering("uri://o", DOCKER))
    with pytest.raises(dataclasses.FrozenInstanceError):
        registry.records = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        registry.index[DOCKER] = ()  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        registry.records[0].state = None  # type: ignore[misc]


def test_a_policy_is_consulted_whatever_the_task_type(registry_of):
    class Policy:
        @hookimpl
        def ep_policy(self, query, config):
            return None

        @hookimpl
        def ep_claims(self):
            return [Claim("uri://other")]

        @hookimpl
        def ep_evaluate(self):
            return Verdict.no(Reason("NOPE", "never"))

    registry = registry_of(p=Policy())
    assert [i.plugin for i in registry.ep_policy()] == ["p"]
    assert registry.ep_evaluate(DOCKER) == ()
