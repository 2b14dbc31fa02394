"""``[plugin.jupyter]`` validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ep_plugin_jupyter.config import JupyterConfig


def error_keys(settings: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        JupyterConfig.model_validate(settings)
    return [".".join(str(p) for p in err["loc"]) for err in caught.value.errors()]


def test_defaults_offer_an_example_hub() -> None:
    settings = JupyterConfig.model_validate({})
    assert [(s.servicetype, s.serviceinfo) for s in settings.services] == [
        ("uri://jupyter-hub", {"endpoint": "http://example.org/hub"})
    ]
    assert settings.notebook_roots == []
    assert settings.allow_urls is True
    assert settings.kernels is None
    assert (settings.max_cores, settings.max_memory) == (None, None)


def test_a_full_section(tmp_path: Path) -> None:
    settings = JupyterConfig.model_validate(
        {
            "services": [
                {"servicetype": "uri://jupyter-hub", "serviceinfo": {"endpoint": "https://h"}},
                {"servicetype": "uri://binder-hub"},
            ],
            "notebook_roots": [str(tmp_path)],
            "allow_urls": False,
            "kernels": "python, R",
            "max_cores": 4,
            "max_memory": "8GiB",
        }
    )
    assert [s.servicetype for s in settings.services] == ["uri://jupyter-hub", "uri://binder-hub"]
    assert settings.kernels == ["python", "R"]
    assert settings.max_memory == 8 * 1024**3


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"colour": "blue"}, "colour"),
        ({"max_cores": 0}, "max_cores"),
        ({"max_memory": "lots"}, "max_memory"),
        ({"max_memory": 0}, "max_memory"),
        ({"services": []}, "services"),
        ({"services": [{"servicetype": "not a uri"}]}, "services.0.servicetype"),
        ({"services": [{"servicetype": "uri://x", "endpoint": "y"}]}, "services.0.endpoint"),
        ({"notebook_roots": ["relative/dir"]}, "notebook_roots"),
        ({"notebook_roots": ["/no/such/dir/anywhere"]}, "notebook_roots"),
        ({"kernels": ["python", " "]}, "kernels"),
    ],
)
def test_invalid_settings_name_the_key(settings: dict[str, Any], key: str) -> None:
    assert key in error_keys(settings)


def test_a_file_is_not_a_notebook_root(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert error_keys({"notebook_roots": [str(tmp_path / "file")]}) == ["notebook_roots"]
