"""The plugin's decision against the plain one in ``plain_decide.py``, on
generated input: image references valid and not (upper case, ports, IPv6
hosts, digests, long names, any unicode), platforms, and whole taskinfos of
every shape, on sites of several configurations. Every verdict, reason code,
message, field and offer must be the same, and so must any exception."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ep_plugin_docker.config import DockerConfig
from ep_plugin_docker.decide import Site, decide
from ep_plugin_docker.platforms import parse_platform
from ep_plugin_docker.reference import _REFERENCE, NAME_MAX_LENGTH, parse_digest, parse_reference
from ep_plugin_docker.taskinfo import read_taskinfo
from ep_server import HostInfo, IntRange, Resources, TaskQuery


def _load_plain() -> ModuleType:
    path = Path(__file__).with_name("plain_decide.py")
    spec = importlib.util.spec_from_file_location("ep_plugin_docker_plain_decide", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


plain = _load_plain()

GiB = 1024**3
EXAMPLES = settings(max_examples=1500, deadline=None)


def outcome(function: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
    """What ``function(*args)`` gives: its result, or its exception's type and text."""
    try:
        return ("returned", function(*args))
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))


# --- image references ------------------------------------------------------------

VALID_COMPONENT = st.from_regex(
    r"[a-z0-9]{1,6}(?:(?:[._]|__|-{1,3})[a-z0-9]{1,6}){0,3}", fullmatch=True
)
MESSY = st.text(alphabet="abcXYZ019._-:@/[]é \n", max_size=12)
REGISTRIES = st.sampled_from(
    [
        "", "docker.io/", "ghcr.io/", "localhost/", "localhost:5000/", "LocalHost/",
        "localhostx/", "Registry.Example.COM/", "[::1]:5000/", "[::1]/", "[2001:db8::1]:443/",
        "127.0.0.1:5000/", "host:abc/", "bad_host.example.com/", "-bad.example.com/", "a.b.c/",
        "x-y.z:1/", "[abc]/", "[::g]/", "myorg/", "my-org/", "Org/", "a:b/", "a:/", ".a/",
        "a./", "/", "//",
    ]
)  # fmt: skip
TAGS = st.one_of(
    st.just(""),
    st.from_regex(r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,130}", fullmatch=True),
    st.text(alphabet="aZ9_.-:/@é", max_size=8).map(lambda t: ":" + t),
)
HEX_LENGTHS = st.sampled_from([0, 1, 32, 63, 64, 65, 95, 96, 97, 127, 128, 129])
DIGESTS = st.builds(
    lambda algorithm, digits: f"{algorithm}:{digits}",
    st.sampled_from(["sha256", "sha384", "sha512", "md5", "SHA256", "1sha", "sha256+b", "", "s"]),
    st.one_of(
        HEX_LENGTHS.flatmap(lambda n: st.text("0123456789abcdef", min_size=n, max_size=n)),
        st.text("0123456789abcdefABg:@", max_size=70),
    ),
) | st.text(max_size=12)
REFERENCES = st.one_of(
    st.builds(
        lambda registry, path, tag, digest: registry + path + tag + digest,
        REGISTRIES,
        st.lists(st.one_of(VALID_COMPONENT, VALID_COMPONENT, MESSY), min_size=1, max_size=4).map(
            "/".join
        ),
        TAGS,
        st.one_of(st.just(""), DIGESTS.map(lambda d: "@" + d)),
    ),
    # names about the longest allowed (255), and texts about the longest (1024)
    st.integers(225, 270).map(lambda n: "registry.example.org:5000/" + "a" * (n - 26)),
    st.integers(1000, 1030).map(lambda n: "img:" + "t" * (n - 4)),
    st.integers(960, 1030).map(lambda n: "a/" * (n // 2)),
    st.text(max_size=40),
)


@EXAMPLES
@given(REFERENCES)
def test_references_parse_as_the_plain_parser_parses_them(text: str) -> None:
    new, old = outcome(parse_reference, text), outcome(plain.parse_reference, text)
    if old[0] == "returned":
        assert new[0] == "returned", (new, old)
        assert new[1].__repr__() == old[1].__repr__()
        # every valid reference whose name fits is read in one match
        assert _REFERENCE.fullmatch(text) is not None
        assert len(old[1].name) <= NAME_MAX_LENGTH
    else:
        assert new == old


@EXAMPLES
@given(DIGESTS)
def test_digests_are_checked_as_the_plain_checker_checks_them(text: str) -> None:
    assert outcome(parse_digest, text) == outcome(plain.parse_digest, text)


# --- platforms -----------------------------------------------------------------------

PLATFORM_NAMES = [
    "linux/amd64", "Linux/X86_64", "linux/arm64/v8", "linux/arm64/V8", "linux/arm/v7",
    "linux/armhf", "linux/aarch64", "windows", "win32/x86", "darwin/arm64", " linux/amd64 ",
    "linux//amd64", "a/b/c/d", "", "/", "K/amd64", "linux/arm64/v9",
]  # fmt: skip
PLATFORM_TEXTS = st.one_of(
    st.sampled_from(PLATFORM_NAMES), st.text(alphabet="linuxamd64/_- AKé\t", max_size=12)
)
PLATFORMS = st.one_of(
    PLATFORM_TEXTS,
    st.fixed_dictionaries(
        {},
        optional={
            key: st.one_of(
                st.sampled_from(["", " ", "Linux", "x86_64", "ARM64", "v8", "v7 ", "armhf"]),
                st.none(),
                st.integers(),
            )
            for key in ("os", "architecture", "variant")
        },
    ),
)


@EXAMPLES
@given(PLATFORM_TEXTS)
def test_platforms_parse_as_the_plain_parser_parses_them(text: str) -> None:
    new, old = outcome(parse_platform, text), outcome(plain.parse_platform, text)
    assert repr(new) == repr(old)


# --- whole taskinfos -------------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 70_000)
    | st.floats(-1, 70_000, allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
PORT_NUMBERS = st.one_of(
    st.integers(-5, 70_000),
    st.floats(-1, 70_000, allow_nan=False),
    st.sampled_from(["8080", " 80 ", "x", "0", "65536", "²", True]),
    st.fixed_dictionaries({}, optional={"port": st.one_of(st.integers(0, 70_000), JSON)}),
    JSON,
)
PORTS = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "internal": PORT_NUMBERS,
                "external": PORT_NUMBERS,
                "protocol": st.one_of(
                    st.sampled_from(["tcp", "TCP", "udp", "http", "HTTPS", "sctp", "quic", ""]),
                    JSON,
                ),
            },
        ),
        JSON,
    ),
    max_size=3,
)
TASKINFO_FIELDS = {
    "image": st.one_of(
        REFERENCES,
        st.fixed_dictionaries(
            {},
            optional={
                "locations": st.one_of(st.lists(st.one_of(REFERENCES, JSON), max_size=3), JSON),
                "digest": st.one_of(DIGESTS, JSON),
                "platform": PLATFORMS,
                "mirror": JSON,
                "Digest": JSON,
            },
        ),
        JSON,
    ),
    "platform": st.one_of(PLATFORMS, JSON),
    "privileged": st.one_of(st.booleans(), JSON),
    "entrypoint": st.one_of(st.text(max_size=5), st.lists(st.text(max_size=5), max_size=3), JSON),
    "environment": st.one_of(
        st.dictionaries(st.sampled_from(["A", "", "B=1", "é"]), JSON, max_size=3),
        st.lists(st.one_of(st.sampled_from(["A=1", "=x", "B", ""]), JSON), max_size=3),
        JSON,
    ),
    "network": st.one_of(
        st.sampled_from(["host", "HOST", "bridge", ""]),
        st.fixed_dictionaries(
            {},
            optional={
                "mode": st.one_of(st.sampled_from(["host", "Host", "none"]), JSON),
                "ports": st.one_of(PORTS, JSON),
                "moed": JSON,
            },
        ),
        JSON,
    ),
    "ports": st.one_of(PORTS, JSON),
    "privilaged": JSON,
    "imag": JSON,
}
TASKINFOS = st.builds(
    lambda known, extra: {**extra, **known},
    st.fixed_dictionaries({}, optional=TASKINFO_FIELDS),
    st.dictionaries(st.text(max_size=6), JSON, max_size=2),
)

HOSTS = [
    HostInfo(cores=4, memory=8 * GiB, architecture="x86_64", os="linux"),
    HostInfo(cores=64, memory=0, architecture="aarch64", os="linux"),
]
SERVICES = [
    {"servicetype": "uri://docker-uws", "serviceinfo": {"endpoint": "http://a"}},
    {"servicetype": "uri://k8s-job", "serviceinfo": {"cluster": "b"}},
]
CONFIGS: list[dict[str, Any]] = [
    {},
    {"allow_privileged": True, "allow_host_network": True},
    {"allowed_protocols": ["udp"], "allowed_ports": ["80", "8000-8999"]},
    {"allowed_protocols": "tcp,http,sctp", "platforms": ["linux/amd64", "linux/arm64", "windows"]},
    {"max_cores": 2, "max_memory": "1GiB", "services": SERVICES},
    {"platforms": ["linux"], "allowed_ports": [1, "2-65535"]},
]
SITES = [Site.resolve(DockerConfig.model_validate(c), h) for c in CONFIGS for h in HOSTS]
RANGES = st.builds(IntRange, st.none() | st.integers(0, 2**40), st.none() | st.integers(0, 2**40))


@EXAMPLES
@given(TASKINFOS)
def test_taskinfos_read_as_the_plain_reader_reads_them(taskinfo: dict[str, Any]) -> None:
    new, old = outcome(read_taskinfo, taskinfo), outcome(plain.read_taskinfo, taskinfo)
    assert repr(new) == repr(old)


@EXAMPLES
@given(TASKINFOS, st.sampled_from(SITES), RANGES, RANGES)
def test_decide_answers_as_the_plain_decision_answers(
    taskinfo: dict[str, Any], site: Site, cores: IntRange, memory: IntRange
) -> None:
    query = TaskQuery("uri://docker-container", taskinfo, Resources(cores, memory))
    assert outcome(decide, query, site) == outcome(plain.decide, query, site)


@EXAMPLES
@given(REFERENCES, st.one_of(st.just({}), st.fixed_dictionaries({}, optional=TASKINFO_FIELDS)))
def test_decide_on_any_image_string_answers_as_the_plain_decision(
    image: str, rest: dict[str, Any]
) -> None:
    query = TaskQuery("uri://docker-container", {**rest, "image": image})
    for site in SITES[:2]:
        assert outcome(decide, query, site) == outcome(plain.decide, query, site)
