"""The ExecutionBroker draft's OpenAPI schemas as JSON Schema validators.

OpenAPI 3.1's schemas are JSON Schema 2020-12, so ``jsonschema`` checks
them as they are. The files are read unchanged; their references are
resolved as the draft's code generator resolves them: a bare component name
(``$ref: 'OfferSetRequest'``) is that schema of ``openapi.yaml``'s
components, and the executables' ``../../openapi.yaml#/...`` and
``../../components/utils.yaml#/...`` (written for files two folders down)
are ``openapi.yaml`` and ``components/utils.yaml``. Formats (``uuid``,
``date-time``) are checked too.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DRAFT = Path(__file__).parent / "draft"
EXAMPLES = Path(__file__).parent / "examples"
BASE = "https://draft.invalid/docs/schema/"
_FILES = {
    "openapi.yaml": DRAFT / "openapi.yaml",
    "components/messages.yaml": DRAFT / "components" / "messages.yaml",
    "components/utils.yaml": DRAFT / "components" / "utils.yaml",
}


def _resolved(ref: str, here: str) -> str:
    """A reference as an absolute URI, or a fragment of the same file."""
    if ref.startswith("#"):
        return ref
    if "#" not in ref and "/" not in ref and not ref.endswith(".yaml"):
        return "#/components/schemas/" + ref  # a bare component name
    target, _, fragment = ref.partition("#")
    name = target.rsplit("/", 1)[-1]
    if name == "openapi.yaml":
        return f"{BASE}openapi.yaml#{fragment}" if here != "openapi.yaml" else f"#{fragment}"
    if name in ("utils.yaml", "messages.yaml"):
        return f"{BASE}components/{name}#{fragment}"
    raise ValueError(f"{here}: a reference to an unknown file: {ref}")


def _rewrite(node: Any, here: str) -> Any:
    if isinstance(node, dict):
        out = {k: _rewrite(v, here) for k, v in node.items()}
        if isinstance(out.get("$ref"), str):
            out["$ref"] = _resolved(out["$ref"], here)
        return out
    if isinstance(node, list):
        return [_rewrite(v, here) for v in node]
    return node


@cache
def documents() -> dict[str, dict[str, Any]]:
    """Each file as loaded, references resolved, by its name under ``draft/``."""
    return {name: _rewrite(yaml.safe_load(path.read_text()), name) for name, path in _FILES.items()}


@cache
def _registry() -> Registry:
    resources = [
        (BASE + name, Resource.from_contents(doc, default_specification=DRAFT202012))
        for name, doc in documents().items()
    ]
    return Registry().with_resources(resources)


def validator(component: str) -> jsonschema.Draft202012Validator:
    """The validator of one of ``openapi.yaml``'s component schemas."""
    schema = {"$ref": f"{BASE}openapi.yaml#/components/schemas/{component}"}
    return jsonschema.Draft202012Validator(
        schema, registry=_registry(), format_checker=jsonschema.FormatChecker()
    )


def problems(component: str, instance: Any) -> list[str]:
    """Every way ``instance`` breaks the component's schema, one line each."""
    found = validator(component).iter_errors(copy.deepcopy(instance))
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in found)


def references() -> Iterator[tuple[str, str]]:
    """Every (file, reference) in the draft's files, resolved."""

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    for name, doc in documents().items():
        for ref in walk(doc):
            yield name, ref if "://" in ref else BASE + name + ref


def resolve(uri: str) -> Any:
    """What an absolute reference names."""
    return _registry().resolver().lookup(uri).contents


def examples() -> list[tuple[str, str, str]]:
    """Each example request: (file name, its text, the result it expects)."""
    found = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        text = path.read_text()
        expect = next(
            line.split(":", 1)[1].strip().strip('"')
            for line in text.splitlines()
            if line.startswith("# expect:")
        )
        found.append((path.name, text, expect))
    return found
