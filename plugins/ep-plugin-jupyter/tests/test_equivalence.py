"""The plugin's decision against the plain one in ``plain_decide.py``, on
generated input: notebook locations of every form (http(s) URLs with and
without user, host, port, brackets, unicode, tabs; file URLs; local paths
under a root, outside it, through a symlink, with NUL bytes; any text),
kernels and requirements, on sites of several configurations. Every
verdict, reason code, message, field and offer must be the same, and so
must any exception."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ep_plugin_jupyter.config import JupyterConfig, Service
from ep_plugin_jupyter.decide import Site, decide
from ep_plugin_jupyter.kernels import Kernels, check_kernels
from ep_plugin_jupyter.location import LocationRules, check_location, url_scheme
from ep_server import HostInfo, IntRange, Limit, Resources, TaskQuery


def _load_plain() -> ModuleType:
    path = Path(__file__).with_name("plain_decide.py")
    spec = importlib.util.spec_from_file_location("ep_plugin_jupyter_plain_decide", path)
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


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/{nb.ipynb, sub/deep.ipynb, dir/, link -> sub, loop -> loop},
    other/x.ipynb and outside/secret.ipynb."""
    base = tmp_path_factory.mktemp("notebooks")
    for name in ("root/nb.ipynb", "root/sub/deep.ipynb", "other/x.ipynb", "outside/s.ipynb"):
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text("{}")
    (base / "root" / "dir").mkdir()
    (base / "root" / "link").symlink_to(base / "root" / "sub")
    (base / "root" / "escape").symlink_to(base / "outside")
    (base / "root" / "loop").symlink_to(base / "root" / "loop")
    return base


SCHEMES = st.sampled_from(
    [
        "http://", "https://", "HTTPS://", "HtTp://", "file://", "file://localhost",
        "file:", "ftp://", "", "//", " https://", "\thttps://", "h\nttps://", "https:/",
        "https:", "mailto:", "c:", "http+x://", "1http://",
    ]
)  # fmt: skip
USERS = st.sampled_from(["", "user@", "u:p@", "a@b@", "@", "é@"])
HOSTS = st.one_of(
    st.sampled_from(
        [
            "example.org", "EXAMPLE.org", "", "[::1]", "[::1", "::1]", "[v1.x]", "[::1]x",
            "[fe80::1%25eth0]", "bücher.de", "ex\tample.org", "a b", "\u2100", "host%41",
            "[127.0.0.1]", "x\x00y",
        ]
    ),
    st.text(alphabet="abcAZ09.-_:@[]%é\t /?#", max_size=10),
)  # fmt: skip
PORTS = st.sampled_from(["", ":80", ":", ":abc", ":99999", ":1:2"])
URL_PATHS = st.one_of(
    st.sampled_from(["", "/", "/nb.ipynb", "/a/../b.ipynb", "?q=1", "#frag", "/x?y#z", "/ü"]),
    st.text(max_size=10).map(lambda t: "/" + t),
)
URLS = st.builds(lambda *parts: "".join(parts), SCHEMES, USERS, HOSTS, PORTS, URL_PATHS)


def locations(root: Path) -> st.SearchStrategy[str]:
    base = str(root)
    local = [
        f"{base}/root/nb.ipynb", f"{base}/root/sub/../nb.ipynb", f"{base}/root/missing.ipynb",
        f"{base}/root/dir", f"{base}/root/link/deep.ipynb", f"{base}/root/escape/s.ipynb",
        f"{base}/root/loop", f"{base}/other/x.ipynb", f"{base}/outside/s.ipynb",
        f"{base}/root//nb.ipynb", f"{base}/root/nb.ipynb/", f"{base}/root/./nb.ipynb",
        f"file://{base}/root/nb.ipynb", f"file://localhost{base}/root/nb%2Eipynb",
        f"file://elsewhere{base}/root/nb.ipynb", f"/\t{base}/root/nb.ipynb",
        f"{base}/root/nb\x00.ipynb", "/", "//x/y", "/\t/x", "/\n", "relative/nb.ipynb",
        "nb.ipynb", " /abs", "\x00", "~/nb.ipynb", "/\t/[::1", "//[x/nb", "/\n/]x", "/\r/[v1.x]",
        "//\u2100/nb",
    ]  # fmt: skip
    return st.one_of(
        st.sampled_from(local),
        URLS,
        st.text(max_size=20),
        st.text(max_size=12).map(lambda t: f"{base}/root/{t}"),
        st.text(max_size=12).map(lambda t: "/" + t),
    )


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=5,
)
LANGUAGES = st.sampled_from(["python", "Python ", " python3", "r", "IR", "julia", "", "  ", "é"])
REQUIREMENTS = st.one_of(
    st.sampled_from(
        [
            "requirements.txt", "https://x.org/r.txt", "HTTP://x/r", "ftp://x/r", "/abs/r.txt",
            " r.txt", "c:\\r.txt", "//[::1", "http://[::1/r", "a:b", "", "  ", "\tr.txt",
            "dir/r.txt", "https://", "s3://b/r", "https://[::1]/r", "//x/r",
        ]
    ),
    URLS,
    st.text(max_size=12),
    JSON,
)  # fmt: skip
KERNEL_FIELDS = {
    "kernel": st.one_of(LANGUAGES, JSON),
    "language": st.one_of(LANGUAGES, JSON),
    "languages": st.one_of(st.lists(st.one_of(LANGUAGES, JSON), max_size=3), JSON),
    "requirements": REQUIREMENTS,
    "kernal": JSON,
}


def taskinfos(root: Path) -> st.SearchStrategy[dict[str, Any]]:
    location = st.one_of(locations(root), JSON)
    extra = st.fixed_dictionaries({}, optional=KERNEL_FIELDS)
    nested = st.builds(
        lambda loc, more: {"location": loc, **more} if loc is not None else more,
        st.one_of(st.none(), location),
        extra,
    )
    return st.one_of(
        st.builds(lambda loc, more: {"notebook": loc, **more}, location, extra),
        st.builds(lambda nb, more: {"notebook": nb, **more}, nested, extra),
        st.builds(lambda loc, more: {"location": loc, **more}, location, extra),
        st.builds(
            lambda a, b: {**b, **a},
            st.fixed_dictionaries({}, optional={"notebook": location, "location": location}),
            st.dictionaries(st.text(max_size=6), JSON, max_size=2),
        ),
    )


def sites(root: Path) -> list[Site]:
    services = (
        Service(servicetype="uri://jupyter-hub", serviceinfo={"endpoint": "http://a"}),
        Service(servicetype="uri://binder", serviceinfo={}),
    )
    rules = [
        LocationRules.from_settings([str(root / "root")], True),
        LocationRules.from_settings([str(root / "other"), str(root / "root")], False),
        LocationRules(),
        LocationRules((), False),
    ]
    kernels = [
        Kernels({"python3": "python", "ir": "r", "odd": ""}, "test"),
        Kernels({}, "test"),
    ]
    limits = [(Limit(4, "this host's cores"), Limit.host(0)), (Limit(2), Limit(GiB, "x"))]
    return [
        Site(services[: 1 + i % 2], rule, kernel, cores, memory)
        for i, (rule, kernel, (cores, memory)) in enumerate(
            (r, k, lim) for r in rules for k in kernels for lim in limits
        )
    ]


RANGES = st.builds(IntRange, st.none() | st.integers(0, 2**40), st.none() | st.integers(0, 2**40))


@EXAMPLES
@given(data=st.data())
def test_decide_answers_as_the_plain_decision_answers(tree: Path, data: st.DataObject) -> None:
    taskinfo = data.draw(taskinfos(tree))
    site = data.draw(st.sampled_from(sites(tree)))
    query = TaskQuery("uri://jupyter-notebook", taskinfo, Resources(data.draw(RANGES)))
    assert outcome(decide, query, site) == outcome(plain.decide, query, site)


@EXAMPLES
@given(data=st.data())
def test_locations_are_checked_as_the_plain_check_checks_them(
    tree: Path, data: st.DataObject
) -> None:
    taskinfo = {"notebook": data.draw(locations(tree))}
    for rules in [site.location for site in sites(tree)[::4]]:
        new = outcome(check_location, taskinfo, rules)
        assert new == outcome(plain.check_location, taskinfo, rules)


@EXAMPLES
@given(st.one_of(URLS, REQUIREMENTS.filter(lambda r: isinstance(r, str)), st.text(max_size=30)))
def test_url_scheme_is_urlsplit_s_scheme(text: str) -> None:
    def scheme(value: str) -> str:
        return urlsplit(value).scheme

    assert outcome(url_scheme, text) == outcome(scheme, text)


@EXAMPLES
@given(st.fixed_dictionaries({}, optional={**KERNEL_FIELDS, "notebook": JSON | st.just({})}))
def test_kernels_are_checked_as_the_plain_check_checks_them(taskinfo: dict[str, Any]) -> None:
    for kernels in (Kernels({"python3": "python", "ir": "r"}, "t"), Kernels({}, "t")):
        new = outcome(check_kernels, taskinfo, kernels)
        assert new == outcome(plain.check_kernels, taskinfo, kernels)


def test_the_sites_resolved_from_settings_decide_as_the_plain_decision(tree: Path) -> None:
    host = HostInfo(cores=4, memory=8 * GiB, architecture="x86_64", os="linux")
    settings = {"notebook_roots": [os.fspath(tree / "root")], "kernels": ["python", "r"]}
    site = Site.resolve(JupyterConfig.model_validate(settings), host)
    for location in ("https://example.org/nb.ipynb", f"{tree}/root/nb.ipynb", "ftp://x/nb"):
        query = TaskQuery("uri://jupyter-notebook", {"notebook": location, "kernel": "R"})
        assert outcome(decide, query, site) == outcome(plain.decide, query, site)
