"""Choosing and ranking offers: pure, no gRPC."""

from __future__ import annotations

from typing import Any

import pytest

from ep_server.client import (
    Answer,
    Choice,
    Failure,
    FailureKind,
    IntRange,
    Offer,
    Reason,
    Resources,
    Result,
    Site,
    candidates,
    choose,
    fastest,
    most_cores,
    most_memory,
    preference,
    rank,
)

UWS, K8S, HPC = "uri://docker-uws", "uri://k8s-job", "uri://slurm"


def offer(servicetype: str = UWS, cores: int | None = None, memory: int | None = None) -> Offer:
    resources = None
    if cores is not None or memory is not None:
        resources = Resources(IntRange(None, cores), IntRange(None, memory))
    return Offer(servicetype, {"endpoint": f"http://{servicetype}/{cores}"}, resources)


def yes(name: str, *offers: Offer, elapsed: float = 0.1) -> Result:
    return Result(Site(name, f"{name}:1"), Answer("YES", offers), elapsed)


def no(name: str) -> Result:
    return Result(Site(name, f"{name}:1"), Answer("NO", (), (Reason("NOPE", "no"),)))


def failed(name: str) -> Result:
    return Result(Site(name, f"{name}:1"), Failure(FailureKind.UNREACHABLE, "down"))


def names(choices: list[Choice]) -> list[tuple[str, str]]:
    return [(c.site.name, c.offer.servicetype) for c in choices]


@pytest.mark.parametrize(
    ("servicetype", "accept", "expected"),
    [
        (UWS, [], 0),
        (UWS, [UWS], 0),
        (UWS, [K8S, UWS], 1),
        (HPC, [K8S, UWS], None),
    ],
)
def test_preference(servicetype: str, accept: list[str], expected: int | None) -> None:
    assert preference(servicetype, accept) == expected


def test_candidates_skip_no_answers_failures_and_unaccepted_types() -> None:
    results = [no("a"), failed("b"), yes("c", offer(HPC), offer(UWS)), yes("d", offer(K8S))]
    assert names(candidates(results, [UWS, K8S])) == [("c", UWS), ("d", K8S)]
    assert [c.preference for c in candidates(results, [UWS, K8S])] == [0, 1]


def test_empty_accept_takes_every_offer() -> None:
    results = [yes("c", offer(HPC), offer(UWS))]
    assert names(candidates(results)) == [("c", HPC), ("c", UWS)]


def test_a_yes_word_without_offers_gives_no_candidates() -> None:
    assert candidates([Result(Site("x", "x:1"), Answer("YES"))]) == []


def test_rank_by_preference_before_resources() -> None:
    results = [yes("big", offer(K8S, cores=64)), yes("small", offer(UWS, cores=2))]
    assert names(rank(candidates(results, [UWS, K8S]))) == [("small", UWS), ("big", K8S)]


def test_rank_most_cores_first_within_a_preference() -> None:
    results = [yes("a", offer(cores=4)), yes("b", offer(cores=16)), yes("c", offer(cores=8))]
    assert [c.site.name for c in rank(candidates(results))] == ["b", "c", "a"]


def test_offer_without_stated_resources_ranks_last() -> None:
    results = [yes("none", offer()), yes("some", offer(cores=1))]
    assert [c.site.name for c in rank(candidates(results))] == ["some", "none"]


def test_open_max_uses_the_minimum() -> None:
    at_least_32 = Offer(UWS, resources=Resources(cores=IntRange(32, None)))
    results = [yes("a", offer(cores=16)), yes("b", at_least_32)]
    assert [c.site.name for c in rank(candidates(results))] == ["b", "a"]


def test_ties_keep_the_order_they_came_in() -> None:
    results = [yes("a", offer(cores=4), offer(cores=4)), yes("b", offer(cores=4))]
    ranked = rank(candidates(results))
    assert [c.site.name for c in ranked] == ["a", "a", "b"]
    assert ranked[0].offer is results[0].outcome.offers[0]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("key", "expected"),
    [(most_memory, ["b", "a"]), (most_cores, ["a", "b"]), (fastest, ["b", "a"])],
)
def test_pluggable_keys(key: Any, expected: list[str]) -> None:
    results = [
        yes("a", offer(cores=8, memory=2**30), elapsed=0.5),
        yes("b", offer(cores=2, memory=2**34), elapsed=0.1),
    ]
    assert [c.site.name for c in rank(candidates(results), key)] == expected


def test_custom_key() -> None:
    results = [yes("a", offer(cores=8)), yes("zz", offer(cores=2))]
    by_name_length = rank(candidates(results), key=lambda c: -len(c.site.name))
    assert [c.site.name for c in by_name_length] == ["zz", "a"]


def test_choose_best_or_none() -> None:
    results = [no("a"), failed("b"), yes("c", offer(cores=2)), yes("d", offer(cores=6))]
    best = choose(results, [UWS])
    assert best is not None
    assert best.site.name == "d"
    assert choose(results, [HPC]) is None
    assert choose([no("a"), failed("b")]) is None
