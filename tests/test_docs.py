"""Docs cannot rot: hooks documented, the guide's example installed and tested."""

from __future__ import annotations

import ast
import inspect
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import docblocks
import pytest

import ep_server
from ep_server import hookspecs
from tools.cluster.processes import free_ports

ROOT = Path(__file__).parent.parent
GUIDE = ROOT / "docs" / "plugins.md"
EXAMPLE = ROOT / "docs" / "example" / "ep-plugin-hello"
HOOKS = {
    name: fn for name, fn in vars(hookspecs).items() if name.startswith("ep_") and callable(fn)
}


def test_there_are_hooks():
    assert set(HOOKS) >= {"ep_configure", "ep_claims", "ep_evaluate"}


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_every_hook_is_documented_in_the_guide(name):
    args = ", ".join(inspect.signature(HOOKS[name]).parameters)
    assert f"### `{name}({args})`" in GUIDE.read_text(), f"docs/plugins.md lacks {name}({args})"


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_every_hook_documents_its_arguments(name):
    doc = inspect.getdoc(HOOKS[name]) or ""
    assert len(doc.splitlines()) >= 3, f"{name} has no real docstring"
    for arg in inspect.signature(HOOKS[name]).parameters:
        assert f":param {arg}:" in doc, f"{name} does not document {arg}"
    assert ":returns:" in doc


def test_every_heading_in_the_guide_is_a_real_hook():
    documented = set(re.findall(r"^### `(ep_\w+)\(", GUIDE.read_text(), re.MULTILINE))
    assert documented == set(HOOKS)


EXAMPLE_FILES = [
    "pyproject.toml",
    "ep_plugin_hello/__init__.py",
    "ep_plugin_hello/config.py",
    "ep_plugin_hello/reasons.py",
    "ep_plugin_hello/hooks.py",
    "tests/test_hello.py",
]
#: The plugin distributions that follow the guide's layout.
DISTRIBUTIONS = [EXAMPLE, *sorted((ROOT / "plugins").glob("ep-plugin-*"))]


@pytest.mark.parametrize("path", EXAMPLE_FILES)
def test_the_guide_shows_the_example_files_as_they_are(path):
    assert (EXAMPLE / path).read_text().rstrip() in GUIDE.read_text()


def test_the_guide_shows_every_file_of_the_example():
    sources = {"pyproject.toml"} | {
        str(p.relative_to(EXAMPLE))
        for d in ("ep_plugin_hello", "tests")
        for p in (EXAMPLE / d).glob("*.py")
    }
    assert sources == set(EXAMPLE_FILES)


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=lambda d: d.name)
def test_every_plugin_distribution_has_the_guide_s_layout(dist):
    package = dist.name.replace("-", "_")
    project = tomllib.loads((dist / "pyproject.toml").read_text())["project"]
    [value] = project["entry-points"]["ep_server"].values()
    assert value == f"{package}.hooks"
    for module in ("hooks.py", "config.py", "reasons.py"):
        assert (dist / package / module).is_file(), f"{dist.name} lacks {module}"
    init = ast.parse((dist / package / "__init__.py").read_text())
    assert ast.get_docstring(init)
    assert all(_is_docstring_or_version(node) for node in init.body), f"{package}/__init__.py"


def _is_docstring_or_version(node):
    if isinstance(node, ast.Expr):
        return isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    targets = node.targets if isinstance(node, ast.Assign) else []
    return [getattr(t, "id", None) for t in targets] == ["__version__"]


def test_the_public_api_is_complete_and_sorted():
    public = {
        name
        for name, value in vars(ep_server).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert set(ep_server.__all__) == public
    assert ep_server.__all__ == sorted(ep_server.__all__)


def test_the_guide_example_installs_and_its_tests_pass(tmp_path):
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    pip += ["--no-build-isolation", "--target", str(target), str(EXAMPLE)]
    subprocess.run(pip, check=True, capture_output=True, timeout=300)
    assert (target / "ep_plugin_hello").is_dir()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        env={"PYTHONPATH": str(target), "PATH": str(Path(sys.executable).parent)},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout
    assert "Warning" not in result.stdout + result.stderr  # pytest-asyncio's among them


def _guide_block(containing: str) -> str:
    [block] = [b for _, b in docblocks.blocks(GUIDE.read_text()) if containing in b]
    return block


def test_a_fixed_size_offer_is_built_as_the_guide_shows():
    exec(_guide_block("Resources(cores=IntRange(1, 4)"), {})  # its own assert checks it


@pytest.fixture
def hello_installed(tmp_path):
    """The guide's example installed into a folder of its own, as a site's
    environment would have it (entry point included)."""
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    pip += ["--no-build-isolation", "--target", str(target), str(EXAMPLE)]
    subprocess.run(pip, check=True, capture_output=True, timeout=300)
    return target


def test_installing_a_plugin_on_a_site_runs_as_the_guide_shows(tmp_path, hello_installed):
    [port] = free_ports(1)
    block = _guide_block("ep-server serve --config ep.toml").replace("50055", str(port))
    env = docblocks.venv_env(PYTHONPATH=str(hello_installed))
    shell = docblocks.Shell(tmp_path, env)
    try:
        out = shell.sh(block)
    except AssertionError as exc:  # with what the server said
        log = tmp_path / "hello.log"
        said = log.read_text() if log.exists() else "(no hello.log)"
        raise AssertionError(f"{exc}\n--- hello.log ---\n{said}") from None
    finally:
        shell.stop()
    assert "'name': 'hello'" in out
    assert "'state': 'LOADED'" in out
    assert re.search(r"^1\s+127\.0\.0\.1:\d+\s+YES\s+uri://hello-service", out, re.M), out
    assert "[plugin.static.claims]" in (tmp_path / "ep.toml").read_text()


def test_type_checking_a_plugin_runs_as_the_guide_shows(tmp_path):
    folder = tmp_path / "ep-plugin-hello"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    block = _guide_block("mypy --strict").replace("/path/to/ep-server", str(ROOT))
    block = block.replace("mypy ", f"mypy --cache-dir {tmp_path / 'cache'} ", 1)
    shell = docblocks.Shell(folder, docblocks.venv_env())
    assert "Success: no issues found" in shell.sh(block)
    hooks = folder / "ep_plugin_hello" / "hooks.py"
    hooks.write_text(hooks.read_text().replace("fit.resources, fit.message", "fit.resources, 3"))
    out = shell.sh(block, check=False)
    assert 'Argument 4 to "Offer" has incompatible type "int"; expected "str"' in out


def test_the_policy_example_refuses_docker_tasks_outside_the_group():
    from ep_server import Cause, Identity, Reason, TaskQuery, hookimpl

    namespace = {"hookimpl": hookimpl, "TaskQuery": TaskQuery, "Reason": Reason, "Cause": Cause}
    exec(_guide_block("def ep_policy("), namespace)
    policy = namespace["ep_policy"]
    docker = "uri://docker-container"
    alice = Identity("alice", "token", frozenset({"astro"}))
    assert policy(TaskQuery(docker, identity=alice)) is None
    refused = policy(TaskQuery(docker, identity=Identity("bob", "token")))
    assert (refused.code, refused.cause) == ("GROUP_REQUIRED", Cause.POLICY)
    assert policy(TaskQuery("uri://hello-world")) is None
