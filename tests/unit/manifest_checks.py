"""Schema validation and kustomize-equivalent rendering of ``deploy/k8s`` (no cluster here).

Core kinds are validated with ``kubernetes-validate`` against the Kubernetes
schemas of :data:`KUBERNETES_VERSION` (strict: unknown fields are errors);
custom resources against the ``openAPIV3Schema`` of the CRDs vendored in
``deploy/schemas`` (made strict the same way, as ``kubectl apply
--validate=strict`` is). :func:`render` does what ``kustomize build`` does with
the subset of kustomization fields this repository uses, and refuses any other.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from jsonschema import Draft7Validator

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
SCHEMAS = DEPLOY / "schemas"
#: The Kubernetes minor the manifests are validated against.
KUBERNETES_VERSION = "1.31.0"
#: Kustomization fields :func:`render` implements.
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "namespace", "resources"}
#: Kinds that live in a namespace (every kind used here except none so far).
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}

Manifest = dict[str, Any]


def load(path: Path) -> list[Manifest]:
    """The non-empty YAML documents of ``path``."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _strict(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` wherever the CRD lists its properties.

    Structural CRD schemas prune unknown fields silently; strict field
    validation (kubectl's default since 1.27) rejects them, and so do we.
    """
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if "properties" in schema:  # property names, not keywords: recurse into values only
        out["properties"] = {name: _strict(sub) for name, sub in schema["properties"].items()}
    return out


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """``{(apiVersion, kind): strict openAPIV3Schema}`` of every vendored CRD version."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(SCHEMAS.glob("*.yaml")):
        [crd] = load(path)
        spec = crd["spec"]
        for version in spec["versions"]:
            api_version = f"{spec['group']}/{version['name']}"
            schemas[(api_version, spec["names"]["kind"])] = _strict(
                version["schema"]["openAPIV3Schema"]
            )
    return schemas


_CRDS = crd_schemas()


def problems(manifest: Manifest) -> list[str]:
    """What is wrong with ``manifest`` against its schema (empty: valid), as ``path: message``.

    Raises ``kubernetes_validate.SchemaNotFoundError`` for a kind neither
    Kubernetes nor a vendored CRD defines.
    """
    schema = _CRDS.get((manifest.get("apiVersion", ""), manifest.get("kind", "")))
    if schema is not None:
        return [
            f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
            for error in Draft7Validator(schema).iter_errors(manifest)
        ]
    try:
        kubernetes_validate.validate(copy.deepcopy(manifest), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"]
    return []


class RenderError(ValueError):
    """The kustomization cannot be rendered (missing file, unsupported field, duplicate)."""


def render(directory: Path) -> list[Manifest]:
    """The resources ``kustomize build directory`` would output, in file order.

    Implements ``resources`` (files or directories with their own
    kustomization) and ``namespace``; raises :class:`RenderError` for any
    other kustomization field, a resource that does not exist, or two
    resources of the same kind and name.
    """
    kustomization_path = directory / "kustomization.yaml"
    if not kustomization_path.is_file():
        raise RenderError(f"{directory}: no kustomization.yaml")
    [kustomization] = load(kustomization_path)
    unsupported = set(kustomization) - KUSTOMIZE_FIELDS
    if unsupported:
        raise RenderError(f"{kustomization_path}: fields not rendered here: {sorted(unsupported)}")
    rendered: list[Manifest] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        if path.is_dir():
            rendered.extend(render(path))
        elif path.is_file():
            rendered.extend(load(path))
        else:
            raise RenderError(f"{kustomization_path}: resource {resource} does not exist")
    namespace = kustomization.get("namespace")
    seen: set[tuple[str, str]] = set()
    for manifest in rendered:
        key = (manifest["kind"], manifest["metadata"]["name"])
        if key in seen:
            raise RenderError(f"{kustomization_path}: {key[0]} {key[1]} defined twice")
        seen.add(key)
        if namespace and manifest["kind"] not in CLUSTER_SCOPED:
            manifest["metadata"]["namespace"] = namespace
    return rendered


def strings(value: Any) -> Iterator[str]:
    """Every string anywhere in ``value`` (keys excluded)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
