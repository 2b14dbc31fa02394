"""The README's and the docs' walk-throughs, run as written: "Running a
replicated site" (docs/operations.md) below, the others further down.

The section's code blocks run in order in a temporary directory, with only
what would clash changed: free ports for 50051-50053 and 8080, and a
throwaway role and database on the machine's PostgreSQL (127.0.0.1:5432)
instead of ``ep``, dropped at the end. HAProxy is installed when missing,
as ``make cluster`` does.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docblocks
import pytest

from tools.cluster import haproxy
from tools.cluster.processes import free_ports, wait_until
from tools.cluster.replicas import healthy

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
REPLICAS = ["127.0.0.1:50051", "127.0.0.1:50052", "127.0.0.1:50053"]
BALANCER = "127.0.0.1:8080"
POSTGRES = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1"]


def _section() -> str:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    start = text.index("## Running a replicated site")
    return text[start : text.index("\n## ", start + 1)]


def _blocks() -> list[tuple[str, str]]:
    """The section's fenced code blocks: (language, text)."""
    return re.findall(r"^```(\w*)\n(.*?)^```$", _section(), re.M | re.S)


def test_the_blocks_are_the_walk_through() -> None:
    assert [lang for lang, _ in _blocks()] == ["sh", "toml", "sh", "haproxy", "sh", "sh"]


def test_the_haproxy_config_is_the_one_make_cluster_runs() -> None:
    config = _blocks()[3][1]
    servers = [(f"ep{i}", address) for i, address in enumerate(REPLICAS, start=1)]
    assert config == haproxy.config(BALANCER, servers, "ep-haproxy.sock")


class Walk:
    """The walk-through's shell, its background processes, and what it made."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.name = name
        ports = free_ports(4)
        self.ports = dict(
            zip([*REPLICAS, BALANCER], [f"127.0.0.1:{p}" for p in ports], strict=True)
        )
        binary = haproxy.ensure_haproxy(folder / "apt-get.log")
        path = [str(Path(sys.executable).parent), str(Path(binary).parent), os.environ["PATH"]]
        self.shell = docblocks.Shell(folder, {**os.environ, "PATH": os.pathsep.join(path)})

    def adapt(self, text: str) -> str:
        """The block with this run's ports and database."""
        for old, new in self.ports.items():
            old_port, new_port = old.rpartition(":")[2], new.rpartition(":")[2]
            text = text.replace(old, new).replace(f"localhost:{old_port}", f"localhost:{new_port}")
        name = self.name
        text = text.replace("CREATE ROLE ep LOGIN", f"CREATE ROLE {name} LOGIN")
        text = text.replace("CREATE DATABASE ep OWNER ep", f"CREATE DATABASE {name} OWNER {name}")
        ledger = "postgresql://ep@127.0.0.1:5432/ep"
        return text.replace(ledger, f"postgresql://{name}@127.0.0.1:5432/{name}")

    def sh(self, text: str, timeout: float = 120) -> str:
        """Run a block, adapted, as :meth:`docblocks.Shell.sh` does."""
        return self.shell.sh(self.adapt(text), timeout)

    def stop(self) -> None:
        self.shell.stop()


@pytest.fixture
def walk(tmp_path: Path) -> Iterator[Walk]:
    name = f"ep_readme_{secrets.token_hex(4)}"
    walk = Walk(tmp_path, name)
    try:
        yield walk
    finally:
        walk.stop()
        drop = [f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"DROP ROLE IF EXISTS {name}"]
        for statement in drop:
            subprocess.run([*POSTGRES, "-c", statement], capture_output=True, timeout=60)


def test_the_walk_through_runs_as_written(walk: Walk) -> None:
    blocks = [text for _, text in _blocks()]
    (psql, site, replicas, config, balanced, client) = blocks
    walk.sh(psql)
    assert len((walk.folder / "token").read_text().strip()) >= 40
    (walk.folder / "site.toml").write_text(walk.adapt(site))
    walk.sh(replicas)
    ports = [int(walk.ports[address].rpartition(":")[2]) for address in REPLICAS]
    wait_until(lambda: all(healthy(p) for p in ports), "the replicas", seconds=60, step=0.2)
    (walk.folder / "ep-haproxy.cfg").write_text(walk.adapt(config))
    out = walk.sh(balanced)
    assert "YES" in out
    booked = re.findall(r"^(\S+)\s+BOOKED\s", out, re.M)
    assert len(booked) == 2, out  # accepted through the balancer, listed by a replica
    assert booked[0] == booked[1]
    assert "YES" in walk.sh(client)


def _booking_walk_through() -> str:
    """The README's booking walk-through: the block that makes booking-demo/."""
    [block] = [b for _, b in docblocks.blocks(README.read_text()) if "booking-demo" in b]
    return block


def _serve_default(folder: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``make run``'s server (the default config, so the default ledger file),
    on a free port instead of 50051."""
    log = (folder / "make-run.log").open("wb")
    return subprocess.Popen(
        ["ep-server", "serve", "--listen", "127.0.0.1:0"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def test_the_booking_walk_through_runs_beside_make_run(tmp_path: Path) -> None:
    # make run's server holds the HTTP port that is the default in this
    # test's environment: a walk-through server without a port of its own
    # would fail to start beside it, as it would beside make run on 8080.
    [held] = free_ports(1)
    env = docblocks.venv_env(
        XDG_STATE_HOME=str(tmp_path / "state"), EP_HTTP__LISTEN=f"127.0.0.1:{held}"
    )
    default = _serve_default(tmp_path, env)
    shell = docblocks.Shell(tmp_path, env)
    try:
        wait_until(
            lambda: "listening on" in (tmp_path / "make-run.log").read_text(),
            "make run's server", seconds=60, step=0.2,
        )  # fmt: skip
        port, http_port = free_ports(2)
        walk_through = _booking_walk_through().replace("50052", str(port))
        out = shell.sh(walk_through.replace("8082", str(http_port)))
    finally:
        shell.stop()
        default.terminate()
        default.wait(30)
    assert re.search(r"^\S+\s+BOOKED\s", out, re.M), out
    assert default.returncode == 0, (tmp_path / "make-run.log").read_text()
    assert (tmp_path / "booking-demo" / "ledger.sqlite3").is_file()
    assert not (tmp_path / "tokens.toml").exists()  # the walk-through writes into its folder


def _without_venv() -> dict[str, str]:
    """This environment with the venv's scripts off ``PATH``."""
    scripts = str(Path(sys.executable).parent)
    path = [p for p in os.environ["PATH"].split(os.pathsep) if p != scripts]
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    return {**env, "PATH": os.pathsep.join([*path, "/usr/bin", "/bin"])}


def test_activating_the_venv_puts_its_commands_on_path(tmp_path: Path) -> None:
    [block] = [b for _, b in docblocks.blocks(README.read_text()) if "activate" in b]
    out = docblocks.Shell(ROOT, _without_venv()).sh(block)
    venv = ROOT / ".venv" / "bin"
    assert out.split() == [str(venv / name) for name in ("ep", "ep-server", "buf", "python")]


def test_make_shell_is_a_shell_with_the_venv_activated() -> None:
    env = {**_without_venv(), "SHELL": "/bin/sh"}
    result = subprocess.run(
        ["make", "-s", "-o", "install", "shell"],
        cwd=ROOT, env=env, input="command -v ep\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == str(ROOT / ".venv" / "bin" / "ep")


class Examples:
    """A copy of examples/ in a folder of the test's, ``make run``'s server
    beside it on a free port, and a shell there with the venv's commands.
    ``adapt`` puts this run's ports into a block; the copied files get them
    too."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        shutil.copytree(ROOT / "examples", folder / "examples")
        self.env = docblocks.venv_env(XDG_STATE_HOME=str(folder / "state"))
        self.ports = dict(zip(["50051", "50443", "8080"], map(str, free_ports(3)), strict=True))
        for path in (folder / "examples").rglob("*.toml"):
            path.write_text(self.adapt(path.read_text()))
        self.shell = docblocks.Shell(folder, self.env)
        self.default = subprocess.Popen(
            ["ep-server", "serve", "--listen", f"127.0.0.1:{self.ports['50051']}",
             "--http-listen", f"127.0.0.1:{self.ports['8080']}"],
            cwd=folder, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.shell.sh(f"for i in $(seq 100); do ep info 127.0.0.1:{self.ports['50051']} "
                      "> /dev/null 2>&1 && break; sleep 0.2; done")  # fmt: skip

    def adapt(self, text: str) -> str:
        for old, new in self.ports.items():
            text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
            text = text.replace(f"localhost:{old}", f"localhost:{new}")
        return text

    def sh(self, block: str) -> str:
        return self.shell.sh(self.adapt(block))

    def stop(self) -> None:
        self.shell.stop()
        self.default.terminate()
        self.default.wait(30)


@pytest.fixture
def examples(tmp_path: Path) -> Iterator[Examples]:
    running = Examples(tmp_path)
    try:
        yield running
    finally:
        running.stop()


def _block_with(text: str) -> str:
    """The one block of README.md or docs/ that contains ``text``."""
    [block] = [b for _, b, _ in docblocks.all_blocks() if text in b]
    return block


def test_asking_with_the_example_files_runs_as_written(examples: Examples) -> None:
    out = examples.sh(_block_with("--sites examples/sites.toml"))
    assert re.search(r"^1\s+local\S*\s+YES", out, re.M), out
    assert '"responseword": "YES"' in out


def test_trying_mtls_with_dev_certs_runs_as_written(examples: Examples) -> None:
    out = examples.sh(_block_with("ep-server dev-certs examples/mtls"))
    assert re.search(r"^1\s+local-mtls\s+YES", out, re.M), out
    assert "TLS error" in out
    assert "it may require a client certificate" in out
    assert "no client certificate: refused" in out  # and ep exited non-zero
    for name in ("ca.pem", "server.key", "client.pem"):
        assert (examples.folder / "examples" / "mtls" / name).is_file()


def test_each_hint_gets_the_answer_its_comment_names(examples: Examples) -> None:
    setup, *asks = _block_with("PRIVILEGED_NOT_ALLOWED").strip().splitlines()
    assert len(asks) == 4
    for line in asks:
        command, _, expected = line.partition("# ")
        word, _, detail = expected.partition(": ")
        out = examples.shell.sh(examples.adapt(f"{setup}\n{command}"), check=False)
        assert re.search(rf"^\d*\s+127\.0\.0\.1:\d+\s+{word}\s", out, re.M), out
        assert detail in out.replace("\n", " "), out


def test_the_first_ask_with_buf_curl_runs_as_written(examples: Examples) -> None:
    out = examples.sh(_block_with("buf curl --protocol grpc"))
    answer = json.loads(out)
    assert answer["responseword"] == "YES"
    [offer] = answer["offers"]
    assert offer["servicetype"] == "uri://docker-uws"
    assert offer["serviceinfo"] == {"endpoint": "http://example.org/dkuws"}


def test_the_first_ask_over_http_runs_as_written(examples: Examples) -> None:
    out = examples.sh(_block_with("curl -s 'http://127.0.0.1:8080/accepts"))
    decoder = json.JSONDecoder()
    note, end = decoder.raw_decode(out)  # curl prints no newline after each
    rest, _ = decoder.raw_decode(out[end:].lstrip())
    assert note["responseword"] == note["reponseword"] == "YES"
    assert note["servicetype"] == "uri://docker-uws"
    assert note["serviceinfo"] == {"endpoint": "http://example.org/dkuws"}
    assert rest["offers"][0]["serviceinfo"] == note["serviceinfo"]


def _run_python(examples: Examples, block: str) -> str:
    script = examples.folder / "snippet.py"
    script.write_text(examples.adapt(block))
    return examples.shell.sh("python snippet.py")


def test_asking_with_the_generated_stubs_runs_as_written(examples: Examples) -> None:
    out = _run_python(examples, _block_with("import grpc\n"))
    assert json.loads(out)["responseword"] == "YES"


def test_the_asyncio_client_example_runs_as_written(examples: Examples) -> None:
    out = _run_python(examples, _block_with("async def main()"))
    assert re.search(r"^local Answer\(", out, re.M), out
    assert re.search(r"^local-again Answer\(", out, re.M), out
    assert "uri://docker-uws" in out.splitlines()[-1]  # the choice


def test_the_site_list_example_is_a_valid_site_list() -> None:
    import tomllib

    from ep_server.client.sites import parse_sites

    block = _block_with('name = "edinburgh"')
    sites = parse_sites(tomllib.loads(block), base=ROOT)
    assert [s.name for s in sites] == ["edinburgh", "local", "replicated", "inaf"]
    assert sites[0].tls is not None
    assert sites[0].tls.cert == ROOT / "me.pem"
    assert sites[2].address == "ep1.example.org:50051,ep2.example.org:50051"
    assert sites[3].address == "https://ep.inaf.example.org/"
    assert [s.over_http for s in sites] == [False, False, False, True]
