"""A client in another language: the Node.js tests in tests/node/.

A Node client built from protos/ with @grpc/grpc-js and @grpc/proto-loader
asks a real ``ep-server`` (which the Node test starts and stops itself). This
is the proof that clients generated in any language work, so it is never
skipped: without node or tests/node/node_modules it fails, saying what to do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "node"
MIN_NODE = 20
TIMEOUT = 180  # the Node tests bound every wait themselves; this is the backstop
INSTALL = "run `make install` (it runs `npm ci --prefix tests/node`)"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is not on PATH: install Node.js {MIN_NODE}+ and npm, then {INSTALL}")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    if not match or int(match[1]) < MIN_NODE:
        pytest.fail(f"node {version} at {node} is too old: Node.js {MIN_NODE}+ is needed")
    return node


def _check_node_modules() -> None:
    """Every dependency in package.json installed, at the pinned version."""
    wanted = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    for name, version in wanted.items():
        manifest = NODE_DIR / "node_modules" / name / "package.json"
        if not manifest.is_file():
            pytest.fail(f"{name} is not installed in tests/node/node_modules: {INSTALL}")
        installed = json.loads(manifest.read_text())["version"]
        if installed != version:
            pytest.fail(
                f"tests/node/node_modules has {name} {installed}, package.json pins "
                f"{version}: {INSTALL}"
            )


def test_node_client_asks_a_real_server() -> None:
    node = _node()
    _check_node_modules()
    tests = sorted(str(p.relative_to(ROOT)) for p in NODE_DIR.glob("*.test.mjs"))
    assert tests, "no tests/node/*.test.mjs found"
    env = {
        **os.environ,
        # The ep-server of the environment running pytest, not whatever is on PATH.
        "EP_SERVER": str(Path(sys.executable).with_name("ep-server")),
    }
    env.pop("EP_TEST_TARGET", None)  # always start (and stop) a server of our own
    try:
        run = subprocess.run(
            [node, "--test", *tests],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"node --test did not finish within {TIMEOUT} s:\n{exc.stdout}\n{exc.stderr}")
    output = f"$ node --test {' '.join(tests)}\n{run.stdout}\n{run.stderr}"
    assert run.returncode == 0, output
    # Guard against a runner that ran nothing, or skipped the server's stop.
    passed = re.search(r"^# pass (\d+)$", run.stdout, re.M)
    assert passed, output
    assert int(passed[1]) >= 5, output
    assert re.search(r"^# skipped 0$", run.stdout, re.M), output
