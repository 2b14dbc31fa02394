"""Kernel discovery from fake kernelspec directories, and the kernel check."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from ep_plugin_jupyter.kernels import (
    Kernels,
    check_kernels,
    discover_kernels,
    jupyter_data_dirs,
    requested_languages,
    scan_kernel_dirs,
)
from ep_server import Cause


def install_kernel(data_dir: Path, name: str, spec: object) -> None:
    """Write data_dir/kernels/<name>/kernel.json as Jupyter installs it."""
    kernel_dir = data_dir / "kernels" / name
    kernel_dir.mkdir(parents=True)
    text = spec if isinstance(spec, str) else json.dumps(spec)
    (kernel_dir / "kernel.json").write_text(text)


@pytest.fixture
def no_jupyter_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make jupyter_client unimportable, installed or not."""
    monkeypatch.setitem(sys.modules, "jupyter_client.kernelspec", None)


def test_scan_reads_each_kernel_language(tmp_path: Path) -> None:
    install_kernel(tmp_path, "python3", {"argv": ["python3"], "language": "python"})
    install_kernel(tmp_path, "ir", {"argv": ["R"], "language": "R"})
    install_kernel(tmp_path, "nolang", {"argv": ["x"]})
    install_kernel(tmp_path, "broken", "{not json")
    (tmp_path / "kernels" / "empty").mkdir()
    assert scan_kernel_dirs([tmp_path]) == {"python3": "python", "ir": "r", "nolang": ""}


def test_scan_skips_missing_dirs_and_earlier_dirs_win(tmp_path: Path) -> None:
    install_kernel(tmp_path / "first", "python3", {"language": "python"})
    install_kernel(tmp_path / "second", "python3", {"language": "other"})
    install_kernel(tmp_path / "second", "julia-1.10", {"language": "julia"})
    dirs = [tmp_path / "nowhere", tmp_path / "first", tmp_path / "second"]
    assert scan_kernel_dirs(dirs) == {"python3": "python", "julia-1.10": "julia"}


def test_discovery_without_jupyter_scans_the_dirs(tmp_path: Path, no_jupyter_client: None) -> None:
    install_kernel(tmp_path, "ir", {"language": "R"})
    found = discover_kernels(None, [tmp_path])
    assert found.source == "kernelspec directories"
    assert found.has("R")
    assert found.has("ir")
    assert not found.has("python")


def test_discovery_scans_jupyter_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_jupyter_client: None
) -> None:
    install_kernel(tmp_path, "julia-1.10", {"language": "julia"})
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    assert discover_kernels(None).has("julia")


def test_discovery_uses_jupyter_client_when_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeKernelSpecManager:
        def get_all_specs(self) -> dict[str, object]:
            return {"Python3": {"resource_dir": "/x", "spec": {"language": "Python"}}}

    module = types.ModuleType("jupyter_client.kernelspec")
    module.KernelSpecManager = FakeKernelSpecManager  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "jupyter_client.kernelspec", module)
    found = discover_kernels(None, [])
    assert found.source == "jupyter_client"
    assert found.specs == {"python3": "python"}


def test_configured_kernels_win_over_discovery(tmp_path: Path) -> None:
    install_kernel(tmp_path, "python3", {"language": "python"})
    found = discover_kernels([" Python ", "R"], [tmp_path])
    assert found.source == "config"
    assert found.languages() == ["python", "r"]
    assert not found.has("python3")


def test_an_empty_config_list_means_no_kernels(tmp_path: Path) -> None:
    install_kernel(tmp_path, "python3", {"language": "python"})
    assert discover_kernels([], [tmp_path]).languages() == []


def test_data_dirs_follow_jupyter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JUPYTER_PATH", f"{tmp_path}/a:{tmp_path}/b")
    monkeypatch.setenv("JUPYTER_DATA_DIR", f"{tmp_path}/user")
    dirs = jupyter_data_dirs()
    assert dirs[:3] == [tmp_path / "a", tmp_path / "b", tmp_path / "user"]
    assert Path(sys.prefix, "share", "jupyter") in dirs
    assert dirs[-2:] == [Path("/usr/local/share/jupyter"), Path("/usr/share/jupyter")]


def test_user_data_dir_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JUPYTER_PATH", raising=False)
    monkeypatch.delenv("JUPYTER_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(sys, "platform", "linux")
    assert jupyter_data_dirs()[0] == tmp_path / ".local" / "share" / "jupyter"


def test_requested_languages_from_every_key() -> None:
    taskinfo = {
        "kernel": "python",
        "languages": ["R", "julia"],
        "notebook": {"location": "x", "language": "scala"},
    }
    wanted, bad = requested_languages(taskinfo)
    assert wanted == [
        ("taskinfo.kernel", "python"),
        ("taskinfo.languages[0]", "R"),
        ("taskinfo.languages[1]", "julia"),
        ("taskinfo.notebook.language", "scala"),
    ]
    assert bad == []


def test_malformed_kernel_entries_are_named() -> None:
    wanted, bad = requested_languages({"kernel": 3, "languages": ["python", "", None]})
    assert wanted == [("taskinfo.languages[0]", "python")]
    assert [(r.code, r.field) for r in bad] == [
        ("INVALID_KERNEL", "taskinfo.kernel"),
        ("INVALID_KERNEL", "taskinfo.languages[1]"),
        ("INVALID_KERNEL", "taskinfo.languages[2]"),
    ]
    _, bad = requested_languages({"languages": {"python": True}})
    assert [r.field for r in bad] == ["taskinfo.languages"]


HOST = Kernels({"python3": "python", "ir": "r"}, "test")


@pytest.mark.parametrize(
    "taskinfo",
    [
        {},
        {"kernel": "python"},
        {"kernel": "Python3"},
        {"languages": ["R", "python"]},
        {"languages": "r"},
        {"language": "IR"},
    ],
)
def test_available_kernels_pass(taskinfo: dict[str, object]) -> None:
    assert check_kernels(taskinfo, HOST) == []


def test_a_missing_language_is_named() -> None:
    reasons = check_kernels({"languages": ["python", "julia", "haskell"]}, HOST)
    assert [(r.code, r.field) for r in reasons] == [
        ("KERNEL_UNAVAILABLE", "taskinfo.languages[1]"),
        ("KERNEL_UNAVAILABLE", "taskinfo.languages[2]"),
    ]
    assert "'julia'" in reasons[0].message
    assert "python, r" in reasons[0].message
    assert all(r.cause is Cause.CAPACITY and not r.retryable for r in reasons)


def test_a_host_without_kernels_says_so() -> None:
    (reason,) = check_kernels({"kernel": "python"}, Kernels({}, "test"))
    assert reason.message == "no 'python' kernel on this host (kernels available: none)"
