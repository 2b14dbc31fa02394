"""The decision against a site: policy, platform, resources, all reasons."""

from __future__ import annotations

from typing import Any

import pytest

from ep_plugin_docker import reasons as R
from ep_plugin_docker.config import DockerConfig
from ep_plugin_docker.decide import Site, decide
from ep_server import Cause, HostInfo, IntRange, Offer, Reason, Resources, TaskQuery, Verdict

GiB = 1024**3
HOST = HostInfo(cores=4, memory=8 * GiB, architecture="x86_64", os="linux")
SEED = {"image": "docker.io/example:1.0"}
ANY = IntRange()


def _site(host: HostInfo = HOST, /, **settings: Any) -> Site:
    return Site.resolve(DockerConfig.model_validate(settings), host)


def _ask(
    taskinfo: dict[str, Any] | None = None,
    cores: IntRange = ANY,
    memory: IntRange = ANY,
    site: Site | None = None,
) -> Verdict:
    query = TaskQuery("uri://docker-container", taskinfo or SEED, Resources(cores, memory))
    return decide(query, site or _site())


def _only_reason(verdict: Verdict) -> Reason:
    assert not verdict.offers
    assert len(verdict.reasons) == 1, verdict.reasons
    return verdict.reasons[0]


def test_the_seed_example_gets_the_default_service_within_the_host_s_capacity() -> None:
    verdict = _ask()
    assert verdict.reasons == ()
    assert verdict.offers == (
        Offer(
            "uri://docker-uws",
            {"endpoint": "http://example.org/dkuws"},
            Resources(IntRange(None, 4), IntRange(None, 8 * GiB)),
            "",
        ),
    )


def test_each_configured_service_gives_an_offer() -> None:
    site = _site(
        services=[
            {"servicetype": "uri://docker-uws", "serviceinfo": {"endpoint": "http://a"}},
            {"servicetype": "uri://k8s-job", "serviceinfo": {"cluster": "b"}},
        ]
    )
    verdict = _ask(site=site)
    assert [(o.servicetype, o.serviceinfo) for o in verdict.offers] == [
        ("uri://docker-uws", {"endpoint": "http://a"}),
        ("uri://k8s-job", {"cluster": "b"}),
    ]


# --- resources -------------------------------------------------------------


@pytest.mark.parametrize(("minimum", "fits"), [(1, True), (4, True), (5, False), (10_000, False)])
def test_a_minimum_of_cores_must_fit_the_host(minimum: int, fits: bool) -> None:
    verdict = _ask(cores=IntRange(minimum, None))
    if fits:
        assert verdict.offers[0].resources == Resources(
            IntRange(minimum, 4), IntRange(None, 8 * GiB)
        )
        return
    reason = _only_reason(verdict)
    assert (reason.code, reason.cause, reason.field) == (
        R.INSUFFICIENT_CORES,
        Cause.CAPACITY,
        "resources.cores.min",
    )
    assert not reason.retryable
    assert f"at least {minimum}" in reason.message


@pytest.mark.parametrize(("minimum", "fits"), [(8 * GiB, True), (8 * GiB + 1, False)])
def test_a_minimum_of_memory_must_fit_the_host(minimum: int, fits: bool) -> None:
    verdict = _ask(memory=IntRange(minimum, None))
    if fits:
        assert verdict.offers
    else:
        reason = _only_reason(verdict)
        assert (reason.code, reason.cause, reason.field) == (
            R.INSUFFICIENT_MEMORY,
            Cause.CAPACITY,
            "resources.memory.min",
        )


def test_a_maximum_above_the_limit_is_capped_with_a_message() -> None:
    offer = _ask(cores=IntRange(2, 16), memory=IntRange(GiB, 64 * GiB)).offers[0]
    assert offer.resources == Resources(IntRange(2, 4), IntRange(GiB, 8 * GiB))
    assert offer.message == (
        f"cores capped at the limit of 4; memory capped at the limit of {8 * GiB} bytes"
    )


def test_a_maximum_within_the_limit_is_offered_as_asked() -> None:
    offer = _ask(cores=IntRange(1, 4), memory=IntRange(None, GiB)).offers[0]
    assert offer.resources == Resources(IntRange(1, 4), IntRange(None, GiB))
    assert offer.message == ""


def test_configured_per_task_limits_override_the_host() -> None:
    site = _site(max_cores=2, max_memory="1GiB")
    assert _only_reason(_ask(cores=IntRange(3, None), site=site)).code == R.INSUFFICIENT_CORES
    assert _only_reason(_ask(memory=IntRange(GiB + 1, None), site=site)).code == (
        R.INSUFFICIENT_MEMORY
    )
    offer = _ask(cores=IntRange(2, None), memory=IntRange(GiB, None), site=site).offers[0]
    assert offer.resources == Resources(IntRange(2, 2), IntRange(GiB, GiB))


def test_a_host_whose_memory_is_unknown_sets_no_memory_limit() -> None:
    site = _site(HostInfo(4, 0, "x86_64", "linux"))
    offer = _ask(memory=IntRange(64 * GiB, None), site=site).offers[0]
    assert offer.resources == Resources(IntRange(None, 4), IntRange(64 * GiB, None))


# --- policy ----------------------------------------------------------------


def test_privileged_is_refused_by_default_and_allowed_by_config() -> None:
    taskinfo = {**SEED, "privileged": True}
    reason = _only_reason(_ask(taskinfo))
    assert (reason.code, reason.cause, reason.field) == (
        R.PRIVILEGED_NOT_ALLOWED,
        Cause.POLICY,
        "taskinfo.privileged",
    )
    assert _ask(taskinfo, site=_site(allow_privileged=True)).offers
    assert _ask({**SEED, "privileged": False}).offers


@pytest.mark.parametrize(
    ("network", "field"),
    [("host", "taskinfo.network"), ({"mode": "Host"}, "taskinfo.network.mode")],
)
def test_host_networking_is_refused_by_default_and_allowed_by_config(
    network: Any, field: str
) -> None:
    taskinfo = {**SEED, "network": network}
    reason = _only_reason(_ask(taskinfo))
    assert (reason.code, reason.cause, reason.field) == (
        R.HOST_NETWORK_NOT_ALLOWED,
        Cause.POLICY,
        field,
    )
    assert _ask(taskinfo, site=_site(allow_host_network=True)).offers


def test_other_networks_are_fine() -> None:
    assert _ask({**SEED, "network": "bridge"}).offers
    assert _ask({**SEED, "network": {"mode": "none"}}).offers


def _port(**port: Any) -> dict[str, Any]:
    return {**SEED, "network": {"ports": [port]}}


@pytest.mark.parametrize(
    ("protocol", "allowed", "code"),
    [
        (None, None, None),
        ("TCP", None, None),
        ("udp", None, None),
        ("HTTPS", None, None),
        ("http", ["udp"], R.PROTOCOL_NOT_ALLOWED),
        ("sctp", None, R.PROTOCOL_NOT_ALLOWED),
        ("sctp", ["tcp", "sctp"], None),
        ("udp", ["tcp"], R.PROTOCOL_NOT_ALLOWED),
        ("quic", None, R.INVALID_PROTOCOL),
    ],
)
def test_port_protocols(protocol: str | None, allowed: list[str] | None, code: str | None) -> None:
    settings = {} if allowed is None else {"allowed_protocols": allowed}
    verdict = _ask(_port(internal={"port": 8080}, protocol=protocol), site=_site(**settings))
    if code is None:
        assert verdict.offers
        return
    reason = _only_reason(verdict)
    cause = Cause.REQUEST if code == R.INVALID_PROTOCOL else Cause.POLICY
    assert (reason.code, reason.cause, reason.field) == (
        code,
        cause,
        "taskinfo.network.ports[0].protocol",
    )


@pytest.mark.parametrize(
    ("external", "ranges", "ok"),
    [
        (1023, None, False),
        (1024, None, True),
        (65535, None, True),
        (443, ["8000-8999", 443], True),
        (8999, ["8000-8999", 443], True),
        (9000, ["8000-8999", 443], False),
        (7999, ["8000-8999", 443], False),
    ],
)
def test_external_ports_must_be_in_the_allowed_ranges(
    external: int, ranges: list[Any] | None, ok: bool
) -> None:
    settings = {} if ranges is None else {"allowed_ports": ranges}
    verdict = _ask(_port(internal=80, external={"port": external}), site=_site(**settings))
    if ok:
        assert verdict.offers
        return
    reason = _only_reason(verdict)
    assert (reason.code, reason.cause, reason.field) == (
        R.PORT_NOT_ALLOWED,
        Cause.POLICY,
        "taskinfo.network.ports[0].external",
    )


def test_an_internal_port_below_1024_is_fine_it_stays_inside_the_container() -> None:
    assert _ask(_port(internal={"port": 80})).offers


# --- platform --------------------------------------------------------------


@pytest.mark.parametrize(
    ("machine", "platform", "ok"),
    [
        ("x86_64", "linux/amd64", True),
        ("x86_64", {"os": "linux", "architecture": "x86_64"}, True),
        ("x86_64", "linux/arm64/v8", False),
        ("aarch64", "linux/arm64/v8", True),
        ("aarch64", {"architecture": "arm64"}, True),
        ("aarch64", "linux/amd64", False),
        ("x86_64", "windows/amd64", False),
    ],
)
def test_the_image_platform_must_match_the_host(machine: str, platform: Any, ok: bool) -> None:
    site = _site(HostInfo(4, 8 * GiB, machine, "linux"))
    taskinfo = {"image": {"locations": ["x"], "platform": platform}}
    verdict = _ask(taskinfo, site=site)
    if ok:
        assert verdict.offers
        return
    reason = _only_reason(verdict)
    assert (reason.code, reason.cause, reason.field) == (
        R.UNSUPPORTED_PLATFORM,
        Cause.CAPACITY,
        "taskinfo.image.platform",
    )


def test_configured_platforms_replace_the_host_s() -> None:
    site = _site(platforms=["linux/amd64", "linux/arm64"])
    assert _ask({**SEED, "platform": "linux/arm64/v8"}, site=site).offers
    assert _ask({**SEED, "platform": "linux/amd64"}, site=site).offers
    reason = _only_reason(_ask({**SEED, "platform": "linux/riscv64"}, site=site))
    assert reason.field == "taskinfo.platform"
    assert "linux/amd64, linux/arm64" in reason.message


# --- all at once -------------------------------------------------------------


def test_a_decline_gives_every_reason() -> None:
    taskinfo = {
        "image": "docker.io/Example:1.0",
        "platform": "linux/s390x",
        "privileged": True,
        "network": {"mode": "host", "ports": [{"external": 22, "protocol": "sctp"}]},
    }
    verdict = _ask(taskinfo, cores=IntRange(10_000, None), memory=IntRange(GiB**2, None))
    assert not verdict.offers
    assert [(r.code, r.cause, r.field) for r in verdict.reasons] == [
        (R.INVALID_IMAGE_REFERENCE, Cause.REQUEST, "taskinfo.image"),
        (R.UNSUPPORTED_PLATFORM, Cause.CAPACITY, "taskinfo.platform"),
        (R.PRIVILEGED_NOT_ALLOWED, Cause.POLICY, "taskinfo.privileged"),
        (R.HOST_NETWORK_NOT_ALLOWED, Cause.POLICY, "taskinfo.network.mode"),
        (R.PROTOCOL_NOT_ALLOWED, Cause.POLICY, "taskinfo.network.ports[0].protocol"),
        (R.PORT_NOT_ALLOWED, Cause.POLICY, "taskinfo.network.ports[0].external"),
        (R.INSUFFICIENT_CORES, Cause.CAPACITY, "resources.cores.min"),
        (R.INSUFFICIENT_MEMORY, Cause.CAPACITY, "resources.memory.min"),
    ]


def test_a_misspelt_field_is_a_yes_with_a_note_not_a_refusal() -> None:
    verdict = _ask({**SEED, "privilaged": True}, cores=IntRange(1, 100))
    assert verdict.offers
    message = verdict.offers[0].message
    assert "capped" in message or "at most" in message  # the fit's note comes first
    assert message.endswith(
        "ignored taskinfo fields this site does not know: "
        "taskinfo.privilaged (did you mean privileged?)"
    )
