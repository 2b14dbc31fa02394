"""Platforms: parsing, normalising and matching against the host."""

from __future__ import annotations

import pytest

from ep_plugin_docker.platforms import InvalidPlatform, Platform, host_platform, parse_platform


@pytest.mark.parametrize(
    ("os", "machine", "expected"),
    [
        ("linux", "x86_64", Platform("linux", "amd64")),
        ("linux", "AMD64", Platform("linux", "amd64")),
        ("linux", "aarch64", Platform("linux", "arm64")),
        ("darwin", "arm64", Platform("darwin", "arm64")),
        ("linux", "armv7l", Platform("linux", "arm", "v7")),
        ("linux", "i686", Platform("linux", "386")),
        ("linux", "riscv64", Platform("linux", "riscv64")),
        ("win32", "AMD64", Platform("windows", "amd64")),
        ("linux2", "ppc64le", Platform("linux", "ppc64le")),
    ],
)
def test_the_host_platform_uses_oci_names(os: str, machine: str, expected: Platform) -> None:
    assert host_platform(os, machine) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("linux/x86_64", Platform("linux", "amd64")),
        ("Linux/AMD64", Platform("linux", "amd64")),
        ("linux/arm64/v8", Platform("linux", "arm64")),
        ("linux/aarch64", Platform("linux", "arm64")),
        ("linux/arm/v6", Platform("linux", "arm", "v6")),
        ("linux/arm", Platform("linux", "arm")),
        ("linux", Platform("linux")),
        ("windows/amd64", Platform("windows", "amd64")),
    ],
)
def test_platform_strings_parse_and_normalise(text: str, expected: Platform) -> None:
    assert parse_platform(text) == expected


@pytest.mark.parametrize("text", ["", "linux/amd64/v8/x", "linux amd64", "linux//amd64", "/amd64"])
def test_malformed_platforms_are_refused(text: str) -> None:
    with pytest.raises(InvalidPlatform, match="os/architecture"):
        parse_platform(text)


@pytest.mark.parametrize(
    ("host", "wanted", "runs"),
    [
        (("linux", "x86_64"), "linux/amd64", True),
        (("linux", "x86_64"), "linux", True),
        (("linux", "x86_64"), "linux/arm64", False),
        (("linux", "x86_64"), "windows/amd64", False),
        (("linux", "aarch64"), "linux/arm64/v8", True),
        (("linux", "aarch64"), "linux/arm64", True),
        (("linux", "aarch64"), "linux/amd64", False),
        (("linux", "armv7l"), "linux/arm/v7", True),
        (("linux", "armv7l"), "linux/arm", True),
        (("linux", "armv7l"), "linux/arm/v6", False),
    ],
)
def test_a_host_runs_the_platforms_it_matches(
    host: tuple[str, str], wanted: str, runs: bool
) -> None:
    assert host_platform(*host).runs(parse_platform(wanted)) is runs


def test_a_platform_prints_as_os_arch_variant() -> None:
    assert str(parse_platform("linux/arm/v7")) == "linux/arm/v7"
    assert str(Platform(None, "amd64")) == "*/amd64"
