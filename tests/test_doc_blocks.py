"""Docs cannot rot: every fenced block of README.md and docs/ is run or
checked by a test, or marked as an illustration with the reason.

The line just before each block is an HTML comment, which renderers hide:
``<!-- tested by tests/test_readme.py::test_name -->`` names the test that
runs or checks the block (it finds the block by its content), and
``<!-- illustration: why it is not run -->`` says why none does. A new
block without either fails here; a renamed or deleted test too.
"""

from __future__ import annotations

import re
from pathlib import Path

import docblocks
import pytest

ROOT = docblocks.ROOT
TESTED = re.compile(r"tested by (tests/[\w/]+\.py)::(test_\w+)")


def _problems(doc: Path) -> list[str]:
    problems = []
    for marker, _, body in docblocks.marked_blocks(doc.read_text()):
        first = body.splitlines()[0] if body else "(empty)"
        tested = TESTED.fullmatch(marker)
        if tested:
            path, name = ROOT / tested[1], tested[2]
            defined = rf"^(async )?def {name}\("
            if not path.is_file() or not re.search(defined, path.read_text(), re.M):
                problems.append(f"{first!r}: {tested[1]} has no {name}")
        elif marker.startswith("illustration:"):
            if len(marker.removeprefix("illustration:").split()) < 3:
                problems.append(f"{first!r}: an illustration needs a reason")
        else:
            problems.append(f"{first!r}: neither tested by a test nor an illustration")
    return problems


@pytest.mark.parametrize("doc", docblocks.DOCUMENTS, ids=lambda d: d.name)
def test_every_block_is_tested_or_an_illustration(doc: Path) -> None:
    assert not _problems(doc), "\n".join(_problems(doc))


def test_every_block_is_seen() -> None:
    text = "\n".join(doc.read_text() for doc in docblocks.DOCUMENTS)
    fences = len(re.findall(r"^```", text, re.M))
    assert fences == 2 * len(docblocks.all_blocks())


def test_an_unmarked_block_is_a_problem(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("```sh\nep ask\n```\n\n<!-- tested by tests/test_cli.py::test_nothing -->\n"
                   "```sh\nep info\n```\n<!-- illustration: -->\n```sh\nx\n```\n")  # fmt: skip
    assert _problems(doc) == [
        "'ep ask': neither tested by a test nor an illustration",
        "'ep info': tests/test_cli.py has no test_nothing",
        "'x': an illustration needs a reason",
    ]


def test_the_layout_in_the_development_notes_names_paths_that_exist() -> None:
    [layout] = [b for _, b, d in docblocks.all_blocks() if b.startswith("protos/ivoa/ep/v1/")]
    paths = [line.split()[0] for line in layout.splitlines() if line.strip()]
    assert len(paths) > 30
    assert [p for p in paths if not (ROOT / p).exists()] == []


def test_the_readme_is_a_short_path_linking_every_doc() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) < 12 * 1024
    for doc in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{doc.name})" in readme, f"the README does not link docs/{doc.name}"
