"""Docs cannot rot: hooks documented, the guide's example installed and tested."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ep_server
from ep_server import hookspecs

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


@pytest.mark.parametrize(
    "path", ["pyproject.toml", "ep_plugin_hello/__init__.py", "tests/test_hello.py"]
)
def test_the_guide_shows_the_example_files_as_they_are(path):
    assert (EXAMPLE / path).read_text().rstrip() in GUIDE.read_text()


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
    assert "4 passed" in result.stdout
