"""The OCI image-reference parser, against the distribution/reference grammar."""

from __future__ import annotations

import re

import pytest

from ep_plugin_docker.reference import (
    DEFAULT_DOMAIN,
    ImageRef,
    InvalidReference,
    parse_digest,
    parse_reference,
)

SHA256 = "sha256:" + "0123456789abcdef" * 4
SHA512 = "sha512:" + "0123456789abcdef" * 8


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example", ImageRef("", "example")),
        ("docker.io/example:1.0", ImageRef("docker.io", "example", "1.0")),
        ("library/ubuntu:22.04", ImageRef("", "library/ubuntu", "22.04")),
        (
            "ghcr.io/ivoa/oligia-webtop:ubuntu-2022.01.13",
            ImageRef("ghcr.io", "ivoa/oligia-webtop", "ubuntu-2022.01.13"),
        ),
        ("localhost/foo", ImageRef("localhost", "foo")),
        ("localhost:5000/foo/bar:tag", ImageRef("localhost:5000", "foo/bar", "tag")),
        ("registry.example.org:443/a/b/c", ImageRef("registry.example.org:443", "a/b/c")),
        ("127.0.0.1:5000/img", ImageRef("127.0.0.1:5000", "img")),
        ("[::1]:5000/foo:latest", ImageRef("[::1]:5000", "foo", "latest")),
        ("[2001:db8::1]/img", ImageRef("[2001:db8::1]", "img")),
        ("Registry.Example.COM/foo", ImageRef("Registry.Example.COM", "foo")),
        ("my-registry.io/x", ImageRef("my-registry.io", "x")),
        ("a__b/c.d/e-f", ImageRef("", "a__b/c.d/e-f")),
        ("a--b_c", ImageRef("", "a--b_c")),
        ("0/1", ImageRef("", "0/1")),
        ("ubuntu@" + SHA256, ImageRef("", "ubuntu", None, SHA256)),
        ("ubuntu:22.04@" + SHA256, ImageRef("", "ubuntu", "22.04", SHA256)),
        ("host.example/ns/img@" + SHA512, ImageRef("host.example", "ns/img", None, SHA512)),
        ("img:Tag_UPPER.9-x", ImageRef("", "img", "Tag_UPPER.9-x")),
        ("img:_x", ImageRef("", "img", "_x")),
        ("img:" + "t" * 128, ImageRef("", "img", "t" * 128)),
        # No slash: "localhost:5000" is the image "localhost" with tag "5000".
        ("localhost:5000", ImageRef("", "localhost", "5000")),
    ],
)
def test_valid_references_parse_into_their_parts(text: str, expected: ImageRef) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "must not be empty"),
        ("Example", "must be lower-case"),
        ("docker.io/Example:1.0", "must be lower-case"),
        ("docker.io/", "repository name must not be empty"),
        (":1.0", "repository name must not be empty"),
        ("foo//bar", "component '' is invalid"),
        ("-example", "'-example' is invalid"),
        ("example-", "'example-' is invalid"),
        ("a..b", "'a..b' is invalid"),
        ("a___b", "'a___b' is invalid"),
        ("ex ample", "is invalid"),
        ("example:1.0:2.0", "'example:1.0' is invalid"),
        ("example:", "tag '' is invalid"),
        ("example:-tag", "tag '-tag' is invalid"),
        ("example:.tag", "tag '.tag' is invalid"),
        ("example:" + "t" * 129, "is invalid"),
        ("example:t@g", "digest 'g' is not of the form"),
        ("example@", "digest '' is not of the form"),
        ("example@sha256", "is not of the form algorithm:hex"),
        ("example@sha256:abc", "must be 64 lower-case hex digits"),
        ("example@sha256:" + "a" * 63, "must be 64 lower-case hex digits"),
        ("example@sha256:" + "a" * 65, "must be 64 lower-case hex digits"),
        ("example@sha256:" + "A" * 64, "must be 64 lower-case hex digits"),
        ("example@sha256:" + "g" * 64, "must be 64 lower-case hex digits"),
        ("example@sha512:" + "a" * 64, "must be 128 lower-case hex digits"),
        ("example@md5:" + "a" * 32, "'md5' is not supported"),
        ("example@1sha:" + "a" * 64, "is not of the form algorithm:hex"),
        ("-bad.example.com/foo", "registry '-bad.example.com' is not a valid host"),
        ("bad_host.example.com/foo", "is not a valid host"),
        ("host:abc/foo", "registry 'host:abc' is not a valid host"),
        ("[::1/foo", "is not a valid host"),
        ("[::g]:5000/foo", "is not a valid host"),
        ("a" * 1025, "at most 1024"),
    ],
)
def test_malformed_references_are_refused_saying_why(text: str, why: str) -> None:
    with pytest.raises(InvalidReference, match=re.escape(why)):
        parse_reference(text)


def test_the_name_may_be_255_characters_but_no_more() -> None:
    domain = "registry.example.org/"
    at_limit = domain + "a" * (255 - len(domain))
    assert parse_reference(at_limit + ":1.0").path == "a" * (255 - len(domain))
    with pytest.raises(InvalidReference, match="longer than 255"):
        parse_reference(at_limit + "a")


def test_an_unqualified_image_is_on_docker_hub() -> None:
    assert parse_reference("ubuntu").registry == DEFAULT_DOMAIN
    assert parse_reference("ghcr.io/x/y").registry == "ghcr.io"
    # A lower-case first component without '.', ':' is a namespace, not a host.
    assert parse_reference("myorg/img").registry == DEFAULT_DOMAIN


@pytest.mark.parametrize(
    "text",
    ["ubuntu", "docker.io/example:1.0", "[::1]:5000/a/b:c@" + SHA256, "x@" + SHA512],
)
def test_a_reference_prints_as_written(text: str) -> None:
    assert str(parse_reference(text)) == text


def test_parse_digest_accepts_the_registered_algorithms() -> None:
    assert parse_digest(SHA256) == SHA256
    assert parse_digest(SHA512) == SHA512
    assert parse_digest("sha384:" + "ab" * 48) == "sha384:" + "ab" * 48
    with pytest.raises(InvalidReference):
        parse_digest("sha256:" + "0" * 32)
