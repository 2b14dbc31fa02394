"""Reading taskinfo: both shapes, leniency about unknown fields, strictness
about the fields read."""

from __future__ import annotations

from typing import Any

import pytest

from ep_plugin_docker import reasons as R
from ep_plugin_docker.platforms import Platform
from ep_plugin_docker.reference import ImageRef
from ep_plugin_docker.taskinfo import PortRequest, read_taskinfo
from ep_server import Cause

SHA256 = "sha256:" + "ab" * 32


def _codes(taskinfo: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r.code, r.field) for r in read_taskinfo(taskinfo)[1]]


def test_the_note_s_seed_taskinfo() -> None:
    request, found = read_taskinfo({"image": "docker.io/example:1.0"})
    assert found == []
    assert request.images == (("taskinfo.image", ImageRef("docker.io", "example", "1.0")),)
    assert not request.privileged
    assert request.host_network == ""
    assert request.ports == ()


def test_the_execution_broker_s_docker_container() -> None:
    taskinfo = {
        "image": {
            "locations": ["ghcr.io/ivoa/oligia-webtop:ubuntu-2022.01.13", "quay.io/x/y@" + SHA256],
            "digest": SHA256,
            "platform": {"architecture": "amd64", "os": "linux"},
        },
        "privileged": False,
        "entrypoint": "/bin/start",
        "environment": {"HOME": "/home/user", "EMPTY": ""},
        "network": {
            "ports": [
                {"access": True, "internal": {"port": 3000}, "protocol": "HTTP", "path": "/"},
                {"internal": {"port": 53}, "external": {"port": 5353}, "protocol": "UDP"},
            ]
        },
    }
    request, found = read_taskinfo(taskinfo)
    assert found == []
    assert [path for path, _ in request.images] == [
        "taskinfo.image.locations[0]",
        "taskinfo.image.locations[1]",
    ]
    assert request.platforms == (("taskinfo.image.platform", Platform("linux", "amd64")),)
    assert request.ports == (
        PortRequest("taskinfo.network.ports[0]", 3000, None, "http"),
        PortRequest("taskinfo.network.ports[1]", 53, 5353, "udp"),
    )


def test_top_level_platform_ports_and_host_network_forms() -> None:
    request, found = read_taskinfo(
        {
            "image": "x",
            "platform": "linux/arm64/v8",
            "network": "host",
            "ports": [{"internal": 8080.0, "external": 18080}],
            "entrypoint": ["/bin/sh", "-c", "run"],
            "environment": ["A=1", "B="],
        }
    )
    assert found == []
    assert request.platforms == (("taskinfo.platform", Platform("linux", "arm64")),)
    assert request.host_network == "taskinfo.network"
    assert request.ports == (PortRequest("taskinfo.ports[0]", 8080, 18080, None),)
    mode, _ = read_taskinfo({"image": "x", "network": {"mode": "HOST"}})
    assert mode.host_network == "taskinfo.network.mode"
    bridge, _ = read_taskinfo({"image": "x", "network": {"mode": "bridge"}})
    assert bridge.host_network == ""


def test_unknown_fields_and_nulls_are_ignored() -> None:
    taskinfo = {
        "image": "x",
        "volumes": [{"anything": 1}],
        "name": 42,
        "privileged": None,
        "network": {"ports": None, "dns": ["1.1.1.1"]},
    }
    assert read_taskinfo(taskinfo)[1] == []


@pytest.mark.parametrize(
    ("taskinfo", "field"),
    [
        ({"image": 42}, "taskinfo.image"),
        ({"image": ["x"]}, "taskinfo.image"),
        ({"image": {"locations": "x"}}, "taskinfo.image.locations"),
        ({"image": {"locations": [1]}}, "taskinfo.image.locations[0]"),
        ({"image": {"locations": ["x"], "digest": 5}}, "taskinfo.image.digest"),
        ({"image": {"locations": ["x"], "platform": 5}}, "taskinfo.image.platform"),
        ({"image": {"locations": ["x"], "platform": {"os": 1}}}, "taskinfo.image.platform.os"),
        ({"image": "x", "platform": ["linux"]}, "taskinfo.platform"),
        ({"image": "x", "privileged": "yes"}, "taskinfo.privileged"),
        ({"image": "x", "privileged": 1}, "taskinfo.privileged"),
        ({"image": "x", "entrypoint": 5}, "taskinfo.entrypoint"),
        ({"image": "x", "entrypoint": ["a", 1]}, "taskinfo.entrypoint"),
        ({"image": "x", "environment": "A=1"}, "taskinfo.environment"),
        ({"image": "x", "environment": {"A": 1}}, "taskinfo.environment.A"),
        ({"image": "x", "environment": {"A=B": "c"}}, "taskinfo.environment.A=B"),
        ({"image": "x", "environment": [5]}, "taskinfo.environment[0]"),
        ({"image": "x", "environment": ["=v"]}, "taskinfo.environment[0]"),
        ({"image": "x", "network": 5}, "taskinfo.network"),
        ({"image": "x", "network": {"mode": 1}}, "taskinfo.network.mode"),
        ({"image": "x", "network": {"ports": {}}}, "taskinfo.network.ports"),
        ({"image": "x", "ports": "80"}, "taskinfo.ports"),
        ({"image": "x", "ports": [5]}, "taskinfo.ports[0]"),
        ({"image": "x", "ports": [{"internal": "eighty"}]}, "taskinfo.ports[0].internal"),
        (
            {"image": "x", "ports": [{"internal": {"port": "80/tcp"}}]},
            "taskinfo.ports[0].internal.port",
        ),
        ({"image": "x", "ports": [{"internal": True}]}, "taskinfo.ports[0].internal"),
        ({"image": "x", "ports": [{"internal": 80, "protocol": 6}]}, "taskinfo.ports[0].protocol"),
    ],
)
def test_a_field_of_the_wrong_type_is_a_request_reason_naming_it(
    taskinfo: dict[str, Any], field: str
) -> None:
    found = read_taskinfo(taskinfo)[1]
    assert [(r.code, r.field, r.cause) for r in found] == [(R.INVALID_FIELD, field, Cause.REQUEST)]
    assert found[0].message.startswith(field + ": ")


@pytest.mark.parametrize(
    ("taskinfo", "expected"),
    [
        ({}, [(R.MISSING_IMAGE, "taskinfo.image")]),
        ({"image": {}}, [(R.MISSING_IMAGE, "taskinfo.image.locations")]),
        ({"image": {"locations": []}}, [(R.MISSING_IMAGE, "taskinfo.image.locations")]),
        ({"image": {"digest": SHA256}}, [(R.MISSING_IMAGE, "taskinfo.image.locations")]),
        ({"image": "Bad:Ref:"}, [(R.INVALID_IMAGE_REFERENCE, "taskinfo.image")]),
        (
            {"image": {"locations": ["ok:1", "not ok"]}},
            [(R.INVALID_IMAGE_REFERENCE, "taskinfo.image.locations[1]")],
        ),
        (
            {"image": {"locations": ["x"], "digest": "sha256:xyz"}},
            [(R.INVALID_DIGEST, "taskinfo.image.digest")],
        ),
        (
            {"image": {"locations": ["x@sha256:" + "cd" * 32], "digest": SHA256}},
            [(R.DIGEST_MISMATCH, "taskinfo.image.locations[0]")],
        ),
        ({"image": "x", "platform": "linux amd64"}, [(R.INVALID_PLATFORM, "taskinfo.platform")]),
    ],
)
def test_image_and_platform_problems(taskinfo: dict[str, Any], expected: list[Any]) -> None:
    assert _codes(taskinfo) == expected


def test_a_location_with_the_same_digest_agrees() -> None:
    assert _codes({"image": {"locations": ["x@" + SHA256], "digest": SHA256}}) == []


@pytest.mark.parametrize(
    ("port", "ok"),
    [
        (1, True),
        (65535, True),
        (8080.0, True),
        (0, False),
        (65536, False),
        (-1, False),
        (80.5, False),
    ],
)
def test_port_numbers_are_whole_numbers_from_1_to_65535(port: float, ok: bool) -> None:
    expected = [] if ok else [(R.INVALID_PORT, "taskinfo.ports[0].external.port")]
    assert _codes({"image": "x", "ports": [{"external": {"port": port}}]}) == expected


def test_a_port_entry_must_name_a_port() -> None:
    assert _codes({"image": "x", "ports": [{"protocol": "tcp"}]}) == [
        (R.INVALID_PORT, "taskinfo.ports[0]")
    ]


def test_every_problem_is_reported_not_only_the_first() -> None:
    taskinfo = {
        "image": {"locations": ["BAD", 7], "digest": "nope"},
        "privileged": "true",
        "ports": [{"internal": 0}, "x"],
    }
    assert _codes(taskinfo) == [
        (R.INVALID_DIGEST, "taskinfo.image.digest"),
        (R.INVALID_IMAGE_REFERENCE, "taskinfo.image.locations[0]"),
        (R.INVALID_FIELD, "taskinfo.image.locations[1]"),
        (R.INVALID_FIELD, "taskinfo.privileged"),
        (R.INVALID_PORT, "taskinfo.ports[0].internal"),
        (R.INVALID_FIELD, "taskinfo.ports[1]"),
    ]


def test_unknown_fields_are_listed_with_the_nearest_known_one() -> None:
    taskinfo = {
        "image": {"locations": ["docker.io/example:1.0"], "digets": "x"},
        "privilaged": True,
        "network": {"mode": "bridge", "colour": "blue"},
        "x-extension": 1,
    }
    request, reasons = read_taskinfo(taskinfo)
    assert reasons == []
    assert request.privileged is False
    assert request.ignored == (
        "taskinfo.privilaged (did you mean privileged?)",
        "taskinfo.x-extension",
        "taskinfo.image.digets (did you mean digest?)",
        "taskinfo.network.colour",
    )


def test_a_taskinfo_of_known_fields_ignores_nothing() -> None:
    request, _ = read_taskinfo({"image": "docker.io/example:1.0", "privileged": False})
    assert request.ignored == ()


def test_ports_as_the_draft_s_openapi_writes_them_are_read() -> None:
    taskinfo = {
        "image": "docker.io/example:1.0",
        "network": {"ports": [{"internal": "8080", "external": "18080", "protocol": "TCP",
                               "address": ""}]},
    }  # fmt: skip
    request, found = read_taskinfo(taskinfo)
    assert found == []
    assert request.ports == (PortRequest("taskinfo.network.ports[0]", 8080, 18080, "tcp"),)
    _, found = read_taskinfo({"image": "docker.io/example:1.0", "ports": [{"internal": "0"}]})
    assert [(r.code, r.field) for r in found] == [("INVALID_PORT", "taskinfo.ports[0].internal")]
