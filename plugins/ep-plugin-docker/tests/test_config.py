"""``[plugin.docker]`` validation: defaults, accepted forms, refused values."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ep_plugin_docker.config import DockerConfig, PortRange
from ep_plugin_docker.platforms import Platform


def test_with_no_settings_the_note_s_service_is_offered_under_a_strict_policy() -> None:
    config = DockerConfig.model_validate({})
    assert [(s.servicetype, s.serviceinfo) for s in config.services] == [
        ("uri://docker-uws", {"endpoint": "http://example.org/dkuws"})
    ]
    assert not config.allow_privileged
    assert not config.allow_host_network
    assert config.allowed_protocols == ["tcp", "udp"]
    assert config.allowed_ports == [PortRange(low=1024, high=65535)]
    assert config.max_cores is None
    assert config.max_memory is None
    assert config.runtime_socket is None
    assert config.parsed_platforms() is None


def test_accepted_forms() -> None:
    config = DockerConfig.model_validate(
        {
            "services": [{"servicetype": "uri://a"}, {"servicetype": "uri://b"}],
            "max_memory": "8GiB",
            "max_cores": 4,
            "allowed_protocols": "TCP, udp",
            "allowed_ports": "1024-2048, 8080",
            "platforms": "linux/amd64,linux/arm64/v8",
            "runtime_socket": "unix:///var/run/docker.sock",
        }
    )
    assert [s.servicetype for s in config.services] == ["uri://a", "uri://b"]
    assert config.max_memory == 8 * 1024**3
    assert config.allowed_protocols == ["tcp", "udp"]
    assert config.allowed_ports == [PortRange(low=1024, high=2048), PortRange(low=8080, high=8080)]
    assert config.parsed_platforms() == (Platform("linux", "amd64"), Platform("linux", "arm64"))
    assert config.runtime_socket == "/var/run/docker.sock"


def test_port_ranges_may_be_numbers_and_pairs() -> None:
    config = DockerConfig.model_validate({"allowed_ports": [443, [8000, 8999], "9000"]})
    assert [str(r) for r in config.allowed_ports] == ["443", "8000-8999", "9000"]
    assert 8999 in config.allowed_ports[1]
    assert 9000 not in config.allowed_ports[1]
    # EP_PLUGIN__DOCKER__ALLOWED_PORTS=8443 arrives as a number.
    lone = DockerConfig.model_validate({"allowed_ports": 8443})
    assert lone.allowed_ports == [PortRange(low=8443, high=8443)]


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"max_core": 4}, "max_core"),
        ({"max_cores": 0}, "max_cores"),
        ({"max_cores": "many"}, "max_cores"),
        ({"max_memory": "lots"}, "max_memory"),
        ({"max_memory": 0}, "max_memory"),
        ({"allow_privileged": "perhaps"}, "allow_privileged"),
        ({"allowed_protocols": ["icmp"]}, "allowed_protocols"),
        ({"allowed_ports": ["2000-1000"]}, "allowed_ports"),
        ({"allowed_ports": ["0"]}, "allowed_ports"),
        ({"allowed_ports": [70000]}, "allowed_ports"),
        ({"allowed_ports": ["80-"]}, "allowed_ports"),
        ({"services": []}, "services"),
        ({"services": [{"servicetype": "not a uri"}]}, "services"),
        ({"services": [{"servicetype": "uri://a", "endpoint": "x"}]}, "services"),
        ({"platforms": ["linux/amd64/v8/x"]}, "platforms"),
        ({"runtime_socket": ""}, "runtime_socket"),
        ({"runtime_timeout": 0}, "runtime_timeout"),
    ],
)
def test_invalid_settings_are_refused_naming_the_key(settings: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DockerConfig.model_validate(settings)
    assert {err["loc"][0] for err in caught.value.errors()} == {key}
