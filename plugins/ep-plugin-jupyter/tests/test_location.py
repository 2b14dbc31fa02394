"""The notebook-location rules, on a real directory tree in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from ep_plugin_jupyter.location import LocationRules, check_location, find_location
from ep_server import Cause


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """tmp_path/root/{nb.ipynb, sub/deep.ipynb} and tmp_path/outside/secret.ipynb."""
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    for name in ("root/nb.ipynb", "root/sub/deep.ipynb", "outside/secret.ipynb"):
        (tmp_path / name).write_text("{}")
    return tmp_path


def rules(tree: Path, allow_urls: bool = True) -> LocationRules:
    return LocationRules.from_settings([str(tree / "root")], allow_urls)


@pytest.mark.parametrize(
    ("taskinfo", "field"),
    [
        ({"notebook": "https://example.org/a.ipynb"}, "taskinfo.notebook"),
        ({"notebook": {"location": "x"}}, "taskinfo.notebook.location"),
        ({"notebook": {}}, "taskinfo.notebook.location"),
        ({"location": "x"}, "taskinfo.location"),
        ({"notebook": "a", "location": "b"}, "taskinfo.notebook"),
    ],
)
def test_find_location_names_the_field(taskinfo: dict[str, object], field: str) -> None:
    found = find_location(taskinfo)
    assert found is not None
    assert found[0] == field


@pytest.mark.parametrize(
    "taskinfo",
    [
        {"notebook": "https://example.org/nb.ipynb"},
        {"notebook": "http://example.org:8080/x/nb.ipynb?raw=1"},
        {"notebook": {"location": "https://github.com/org/repo/blob/main/nb.ipynb"}},
        {"location": "HTTPS://EXAMPLE.ORG/nb.ipynb"},
    ],
)
def test_urls_are_accepted(taskinfo: dict[str, object]) -> None:
    assert check_location(taskinfo, LocationRules()) is None


def test_no_notebook_is_a_request_problem() -> None:
    reason = check_location({"kernel": "python"}, LocationRules())
    assert reason is not None
    assert (reason.code, reason.cause, reason.field) == (
        "NOTEBOOK_MISSING",
        Cause.REQUEST,
        "taskinfo.notebook",
    )


@pytest.mark.parametrize(
    ("taskinfo", "field"),
    [
        ({"notebook": 42}, "taskinfo.notebook"),
        ({"notebook": ""}, "taskinfo.notebook"),
        ({"notebook": {"location": None}}, "taskinfo.notebook.location"),
        ({"notebook": "ftp://example.org/nb.ipynb"}, "taskinfo.notebook"),
        ({"notebook": "https:///nb.ipynb"}, "taskinfo.notebook"),
        ({"notebook": "http://[::1/nb.ipynb"}, "taskinfo.notebook"),
        ({"location": "notebooks/nb.ipynb"}, "taskinfo.location"),
        ({"notebook": "/srv/a\x00b.ipynb"}, "taskinfo.notebook"),
    ],
)
def test_malformed_locations(tree: Path, taskinfo: dict[str, object], field: str) -> None:
    reason = check_location(taskinfo, rules(tree))
    assert reason is not None
    assert (reason.code, reason.cause, reason.field) == (
        "INVALID_NOTEBOOK_LOCATION",
        Cause.REQUEST,
        field,
    )


def test_urls_refused_by_policy() -> None:
    reason = check_location({"notebook": "https://example.org/nb.ipynb"}, LocationRules((), False))
    assert reason is not None
    assert (reason.code, reason.cause) == ("NOTEBOOK_URL_REFUSED", Cause.POLICY)


@pytest.mark.parametrize(
    "relative",
    ["root/nb.ipynb", "root/sub/deep.ipynb", "root/sub/../nb.ipynb", "root/./sub/deep.ipynb"],
)
def test_paths_under_a_root_are_accepted(tree: Path, relative: str) -> None:
    assert check_location({"notebook": str(tree) + "/" + relative}, rules(tree)) is None


def test_file_urls_are_paths(tree: Path) -> None:
    inside = (tree / "root" / "nb.ipynb").as_uri()
    outside = (tree / "outside" / "secret.ipynb").as_uri()
    assert check_location({"notebook": inside}, rules(tree)) is None
    reason = check_location({"notebook": outside}, rules(tree))
    assert reason is not None
    assert reason.code == "NOTEBOOK_OUTSIDE_ROOTS"


def outside_code(tree: Path, path: str) -> str | None:
    reason = check_location({"notebook": path}, rules(tree))
    assert reason is None or reason.cause is Cause.REQUEST
    return reason.code if reason else None


def test_dotdot_cannot_escape_a_root(tree: Path) -> None:
    escape = f"{tree}/root/../outside/secret.ipynb"
    assert outside_code(tree, escape) == "NOTEBOOK_OUTSIDE_ROOTS"
    assert outside_code(tree, f"{tree}/root/sub/../../outside/secret.ipynb") == (
        "NOTEBOOK_OUTSIDE_ROOTS"
    )


def test_a_symlink_out_of_a_root_is_refused(tree: Path) -> None:
    (tree / "root" / "link.ipynb").symlink_to(tree / "outside" / "secret.ipynb")
    (tree / "root" / "linkdir").symlink_to(tree / "outside")
    assert outside_code(tree, f"{tree}/root/link.ipynb") == "NOTEBOOK_OUTSIDE_ROOTS"
    assert outside_code(tree, f"{tree}/root/linkdir/secret.ipynb") == "NOTEBOOK_OUTSIDE_ROOTS"


def test_a_symlink_within_a_root_is_followed(tree: Path) -> None:
    (tree / "root" / "alias.ipynb").symlink_to(tree / "root" / "sub" / "deep.ipynb")
    assert outside_code(tree, f"{tree}/root/alias.ipynb") is None


def test_a_root_may_itself_be_a_symlink(tree: Path) -> None:
    (tree / "rootlink").symlink_to(tree / "root")
    linked = LocationRules.from_settings([str(tree / "rootlink")], True)
    assert check_location({"notebook": f"{tree}/root/nb.ipynb"}, linked) is None
    assert check_location({"notebook": f"{tree}/rootlink/nb.ipynb"}, linked) is None


def test_a_sibling_with_the_root_as_prefix_is_outside(tree: Path) -> None:
    (tree / "root-evil").mkdir()
    (tree / "root-evil" / "nb.ipynb").write_text("{}")
    assert outside_code(tree, f"{tree}/root-evil/nb.ipynb") == "NOTEBOOK_OUTSIDE_ROOTS"


def test_no_roots_means_no_local_notebooks(tree: Path) -> None:
    reason = check_location({"notebook": f"{tree}/root/nb.ipynb"}, LocationRules())
    assert reason is not None
    assert reason.code == "NOTEBOOK_OUTSIDE_ROOTS"


def test_a_missing_file_or_a_directory_is_not_found(tree: Path) -> None:
    assert outside_code(tree, f"{tree}/root/missing.ipynb") == "NOTEBOOK_NOT_FOUND"
    assert outside_code(tree, f"{tree}/root/sub") == "NOTEBOOK_NOT_FOUND"


def test_a_symlink_loop_is_not_found(tree: Path) -> None:
    (tree / "root" / "loop").symlink_to(tree / "root" / "loop")
    assert outside_code(tree, f"{tree}/root/loop") == "NOTEBOOK_NOT_FOUND"


def test_any_of_several_roots(tree: Path) -> None:
    both = LocationRules.from_settings([str(tree / "root"), str(tree / "outside")], True)
    assert check_location({"notebook": f"{tree}/outside/secret.ipynb"}, both) is None


def test_a_stat_error_is_not_found(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(self: Path) -> bool:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "is_file", denied)
    assert outside_code(tree, f"{tree}/root/nb.ipynb") == "NOTEBOOK_NOT_FOUND"
