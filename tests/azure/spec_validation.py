"""Validate a request body against a definition of Azure's published REST specs, kept in
``tests/azure/specs/`` (where each file came from: ``specs/PROVENANCE.md``).

``validate(body, "ContainerGroup", spec="containerinstance-2023-05-01")`` answers a list of
``"<path>: <problem>"`` strings, empty when the body fits. What is checked, as ARM's request
deserialisation does for these bodies:

- ``$ref`` and ``allOf`` are followed (properties and ``required`` merged);
- ``required`` properties must be there;
- ``type`` (``string``, ``integer``, ``number``, ``boolean``, ``object``, ``array``; a bool is
  not a number);
- ``enum``: only the listed values, compared case-insensitively as ARM does. An ``x-ms-enum``
  with ``modelAsString: true`` is open in the SDK, but the service still knows a fixed set, so an
  unlisted value is refused here too;
- ``minimum`` / ``maximum`` and ``minItems`` / ``maxItems``;
- properties the definition does not declare are refused (ARM answers "Could not find member");
  a definition with ``additionalProperties`` is a map whose values are checked against it;
- ``readOnly`` properties: ``validate`` refuses them by default (``allow_read_only=False``,
  the strict check the tests make of the bodies the *bot* sends: a body of ours carries none).
  ARM itself ignores them on a PUT or PATCH (a raw GET-then-PUT works against Azure, the
  server-owned values stay as they were), so the double validates with
  ``allow_read_only=True`` and stores ``strip_read_only(body, ...)``: the read-only properties
  are neither checked nor kept;
- polymorphism (``discriminator``): an object of a definition that names a ``discriminator``
  property (e.g. ``RouteConfiguration``'s ``@odata.type``) is checked against the definition
  that value selects: one whose ``allOf`` derives from it directly and whose
  ``x-ms-discriminator-value`` (or, without one, its name) equals the value, exactly as
  written. A missing value is a missing required property; an unknown one is refused naming
  the values there are. Only direct subtypes are looked up (the stored specs have no deeper
  hierarchy).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

SPECS = Path(__file__).parent / "specs"

__all__ = ["SPECS", "definitions", "strip_read_only", "validate"]


@functools.cache
def _load(spec: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((SPECS / f"{spec}.json").read_text())
    return document


def definitions(spec: str) -> dict[str, Any]:
    """The definitions of one stored spec file (``specs/<spec>.json``)."""
    found: dict[str, Any] = _load(spec)["definitions"]
    return found


def validate(body: Any, definition: str, *, spec: str,
             allow_read_only: bool = False) -> list[str]:
    """Problems of ``body`` as a request for ``definition`` of ``spec``: ``"path: problem"``.

    A read-only property is a problem unless ``allow_read_only`` (then it is skipped, not
    checked: what ARM does with it on a PUT or PATCH)."""
    problems: list[str] = []
    _check(body, {"$ref": f"#/definitions/{definition}"}, "$", definitions(spec), problems,
           allow_read_only)
    return problems


def strip_read_only(body: Any, definition: str, *, spec: str) -> Any:
    """A copy of ``body`` without the properties ``definition`` of ``spec`` declares read-only,
    at any depth (through ``$ref``, ``allOf``, arrays, maps and the discriminated subtypes):
    what a resource provider keeps of a request. Everything else is copied as it is."""
    return _strip(body, {"$ref": f"#/definitions/{definition}"}, definitions(spec))


def _strip(value: Any, schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    if isinstance(value, list):
        items = _resolve(schema, defs).get("items", {})
        return [_strip(item, items, defs) for item in value]
    if not isinstance(value, dict):
        return value
    subtype = _polymorphic(value, schema, "$", defs, [])
    schema = _resolve(subtype or schema, defs)
    properties: dict[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    kept: dict[str, Any] = {}
    for name, item in value.items():
        if name in properties:
            if not _read_only(properties[name], defs):
                kept[name] = _strip(item, properties[name], defs)
        else:
            kept[name] = _strip(item, extra, defs) if isinstance(extra, dict) else item
    return kept


def _read_only(declared: dict[str, Any], defs: dict[str, Any]) -> bool:
    """Whether a property is read-only, on itself or on the definition it refers to (such as
    the classic Front Door's ``ResourceState``, read-only as a whole)."""
    return bool(declared.get("readOnly") or _resolve(declared, defs).get("readOnly"))


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The schema with ``$ref`` followed and ``allOf`` folded in (properties, required)."""
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**defs[name], **{k: v for k, v in rest.items() if k == "readOnly"}}
    if "allOf" not in schema:
        return schema
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    properties = dict(merged.get("properties", {}))
    required = list(merged.get("required", []))
    for part in schema["allOf"]:
        resolved = _resolve(part, defs)
        properties.update(resolved.get("properties", {}))
        required += resolved.get("required", [])
        for key in ("type", "additionalProperties", "discriminator"):
            if key in resolved and key not in merged:
                merged[key] = resolved[key]
    merged["properties"], merged["required"] = properties, required
    return merged


def _type_of(schema: dict[str, Any]) -> str | None:
    if "type" in schema:
        kind: str = schema["type"]
        return kind
    if "properties" in schema or "additionalProperties" in schema:
        return "object"
    return None


def _subtypes(base: str, defs: dict[str, Any]) -> dict[str, str]:
    """Discriminator value -> definition name, for the definitions deriving from ``base``."""
    found: dict[str, str] = {}
    for name, definition in defs.items():
        parents = [part.get("$ref", "").rsplit("/", 1)[-1]
                   for part in definition.get("allOf", [])]
        if base in parents:
            found[str(definition.get("x-ms-discriminator-value", name))] = name
    return found


def _polymorphic(value: Any, schema: dict[str, Any], path: str, defs: dict[str, Any],
                 problems: list[str]) -> dict[str, Any] | None:
    """The subtype's schema when ``schema`` is a ``$ref`` to a definition with a
    ``discriminator`` and ``value`` names one of its subtypes; None when ``schema`` is not
    polymorphic; ``{}`` (after recording the problem) when the value names no subtype."""
    if "$ref" not in schema or not isinstance(value, dict):
        return None
    base = schema["$ref"].rsplit("/", 1)[-1]
    prop = defs.get(base, {}).get("discriminator")
    if prop is None:
        return None
    tag = value.get(prop)
    if tag is None:
        return None  # the base's ``required`` reports it
    subtypes = _subtypes(base, defs)
    if tag not in subtypes:
        problems.append(f"{path}.{prop}: {tag!r} is not one of {', '.join(sorted(subtypes))}")
        return {}
    return {"$ref": f"#/definitions/{subtypes[tag]}"}


def _check(value: Any, schema: dict[str, Any], path: str, defs: dict[str, Any],
           problems: list[str], allow_read_only: bool) -> None:
    subtype = _polymorphic(value, schema, path, defs, problems)
    if subtype == {}:
        return
    schema = _resolve(subtype or schema, defs)
    kind = _type_of(schema)
    if kind == "object":
        if not isinstance(value, dict):
            problems.append(f"{path}: expected an object, got {_json_type(value)}")
            return
        _check_object(value, schema, path, defs, problems, allow_read_only)
    elif kind == "array":
        if not isinstance(value, list):
            problems.append(f"{path}: expected an array, got {_json_type(value)}")
            return
        if "minItems" in schema and len(value) < schema["minItems"]:
            problems.append(f"{path}: at least {schema['minItems']} items, got {len(value)}")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append(f"{path}: at most {schema['maxItems']} items, got {len(value)}")
        for index, item in enumerate(value):
            _check(item, schema.get("items", {}), f"{path}[{index}]", defs, problems,
                   allow_read_only)
    elif kind == "string":
        if not isinstance(value, str):
            problems.append(f"{path}: expected a string, got {_json_type(value)}")
            return
        allowed = schema.get("enum")
        if allowed and value.lower() not in {str(v).lower() for v in allowed}:
            problems.append(f"{path}: {value!r} is not one of {', '.join(map(str, allowed))}")
    elif kind in ("integer", "number"):
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if not numeric or (kind == "integer" and isinstance(value, float)
                           and not value.is_integer()):
            problems.append(f"{path}: expected {'an integer' if kind == 'integer' else 'a number'}"
                            f", got {_json_type(value)}")
            return
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{path}: {value} is below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{path}: {value} is above the maximum {schema['maximum']}")
    elif kind == "boolean" and not isinstance(value, bool):
        problems.append(f"{path}: expected a boolean, got {_json_type(value)}")


def _check_object(value: dict[str, Any], schema: dict[str, Any], path: str,
                  defs: dict[str, Any], problems: list[str], allow_read_only: bool) -> None:
    properties: dict[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    for name in schema.get("required", []):
        if name not in value:
            problems.append(f"{path}.{name}: required property missing")
    for name, item in value.items():
        where = f"{path}.{name}"
        if name in properties:
            declared = properties[name]
            if _read_only(declared, defs):
                if not allow_read_only:
                    problems.append(f"{where}: read-only property, not accepted in a request")
                continue
            _check(item, declared, where, defs, problems, allow_read_only)
        elif isinstance(extra, dict):
            _check(item, extra, where, defs, problems, allow_read_only)
        elif extra is True:
            continue
        else:
            problems.append(f"{where}: unknown property")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
