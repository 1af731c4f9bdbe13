"""The official Compute Engine v1 discovery document, as a request validator and a router.

google-api-python-client ships the discovery document Google publishes for the Compute API
(`googleapiclient/discovery_cache/documents/compute.v1.json`). Both the fake Compute server and
the request-body tests read it, so field names, types and enum values come from Google's
definition rather than from a hand-written copy.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import googleapiclient

DOCUMENT_PATH = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "compute.v1.json"

_INT_RANGES = {
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


@dataclass(frozen=True)
class Problem:
    """One way a request body does not match the schema."""

    path: str
    kind: str  # unknown-field | type | enum | pattern | range | output-only | required
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class Method:
    """A REST method of the discovery document, with a regex that matches its path."""

    id: str
    resource: str
    name: str
    http_method: str
    path: str
    request_schema: str | None
    response_schema: str | None
    parameters: dict
    regex: re.Pattern


def _is_output_only(prop: dict) -> bool:
    if prop.get("readOnly"):
        return True
    text = prop.get("description", "").lstrip().lower()
    return text.startswith(("[output only]", "output only"))


class DiscoveryDocument:
    """Schemas and methods of one discovery document."""

    def __init__(self, path: Path = DOCUMENT_PATH) -> None:
        self.path = path
        self.doc = json.loads(path.read_text(encoding="utf-8"))
        self.schemas: dict = self.doc["schemas"]
        self.revision: str = self.doc.get("revision", "")
        self.methods: list[Method] = []
        for resource_name, resource in self.doc["resources"].items():
            for method_name, method in resource.get("methods", {}).items():
                pattern = re.sub(
                    r"\{(\+?)(\w+)\}",
                    lambda m: f"(?P<{m.group(2)}>.+)" if m.group(1) else f"(?P<{m.group(2)}>[^/]+)",
                    method["path"],
                )
                self.methods.append(
                    Method(
                        id=method["id"],
                        resource=resource_name,
                        name=method_name,
                        http_method=method["httpMethod"],
                        path=method["path"],
                        request_schema=(method.get("request") or {}).get("$ref"),
                        response_schema=(method.get("response") or {}).get("$ref"),
                        parameters=method.get("parameters", {}),
                        regex=re.compile(pattern),
                    )
                )
        self._by_id = {m.id: m for m in self.methods}

    def method(self, method_id: str) -> Method:
        """A method by id, e.g. 'compute.instanceTemplates.insert'."""
        return self._by_id[method_id]

    def route(self, http_method: str, path: str) -> tuple[Method, dict] | None:
        """The method a request (path relative to .../compute/v1/) calls, with its path parameters."""
        candidates = []
        for method in self.methods:
            if method.http_method != http_method:
                continue
            match = method.regex.fullmatch(path)
            if match:
                candidates.append((method, match.groupdict()))
        if not candidates:
            return None
        # The most specific template wins (fewest characters matched by parameters).
        return max(candidates, key=lambda c: len(c[0].path) - sum(len(v) for v in c[1].values()))

    def validate(
        self,
        schema_name: str,
        body: object,
        method_id: str | None = None,
        *,
        allow_output_only: bool = False,
        root: str = "resource",
    ) -> list[Problem]:
        """Every way `body` does not fit schema `schema_name` (an empty list when it fits).

        Checks that each field exists, that JSON types match (int64/uint64 travel as strings or
        numbers), enum values, patterns and integer ranges; with `method_id`, the fields the
        document marks as required for that method; unless `allow_output_only`, fields marked
        output only (which a client should not send).
        """
        context = _Context(method_id=method_id, allow_output_only=allow_output_only)
        self._check({"$ref": schema_name}, body, root, context)
        return context.problems

    # --- internals ---------------------------------------------------------------------------
    def _check(self, prop: dict, value: object, path: str, context: _Context) -> None:
        if "$ref" in prop:
            self._check_object(self.schemas[prop["$ref"]], value, path, context)
            return
        kind = prop.get("type")
        if kind == "object":
            self._check_object(prop, value, path, context)
        elif kind == "array":
            if not isinstance(value, list):
                context.add(path, "type", f"expected an array, got {_jtype(value)}")
                return
            for index, item in enumerate(value):
                self._check(prop.get("items", {}), item, f"{path}[{index}]", context)
        elif kind == "string":
            _check_string(prop, value, path, context)
        elif kind in ("boolean", "integer", "number"):
            _check_number_or_boolean(prop, value, path, context)
        elif kind not in ("any", None):
            context.add(path, "type", f"unsupported schema type {kind!r}")

    def _check_object(self, schema: dict, value: object, path: str, context: _Context) -> None:
        if not isinstance(value, dict):
            context.add(path, "type", f"expected an object, got {_jtype(value)}")
            return
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        if properties is None and additional is not None:
            for key, item in value.items():
                self._check(additional, item, f"{path}.{key}", context)
            return
        properties = properties or {}
        for key, item in value.items():
            if key not in properties:
                context.add(f"{path}.{key}", "unknown-field", f"unknown field {key!r}")
                continue
            prop = properties[key]
            if not context.allow_output_only and _is_output_only(prop):
                context.add(f"{path}.{key}", "output-only", f"{key!r} is output only")
            self._check(prop, item, f"{path}.{key}", context)
        if context.method_id:
            for key, prop in properties.items():
                required = prop.get("annotations", {}).get("required", [])
                if context.method_id in required and key not in value:
                    context.add(f"{path}.{key}", "required", f"{key!r} is required by {context.method_id}")


@dataclass
class _Context:
    method_id: str | None
    allow_output_only: bool
    problems: list[Problem] = field(default_factory=list)

    def add(self, path: str, kind: str, message: str) -> None:
        self.problems.append(Problem(path, kind, message))


def _check_range(fmt: str | None, value: int, path: str, context: _Context) -> None:
    low, high = _INT_RANGES.get(fmt, (None, None))
    if low is not None and not low <= value <= high:
        context.add(path, "range", f"{value} is outside the {fmt} range")


def _check_number_or_boolean(prop: dict, value: object, path: str, context: _Context) -> None:
    kind = prop["type"]
    if kind == "boolean":
        if not isinstance(value, bool):
            context.add(path, "type", f"expected a boolean, got {_jtype(value)} {value!r}")
    elif isinstance(value, bool) or not isinstance(value, int if kind == "integer" else int | float):
        context.add(path, "type", f"expected an {kind}, got {_jtype(value)} {value!r}")
    elif kind == "integer":
        _check_range(prop.get("format"), value, path, context)


def _check_string(prop: dict, value: object, path: str, context: _Context) -> None:
    fmt = prop.get("format")
    if fmt in ("int64", "uint64"):
        # JSON has no 64-bit integers: the API takes a decimal string (or a number).
        if isinstance(value, bool) or not isinstance(value, str | int) or not re.fullmatch(r"-?\d+", str(value)):
            context.add(path, "type", f"expected an {fmt} string, got {_jtype(value)} {value!r}")
        else:
            _check_range(fmt, int(value), path, context)
        return
    if not isinstance(value, str):
        context.add(path, "type", f"expected a string, got {_jtype(value)} {value!r}")
        return
    if "enum" in prop and value not in prop["enum"]:
        context.add(path, "enum", f"{value!r} is not one of {prop['enum']}")
    pattern = prop.get("pattern")
    if pattern and not _fullmatch(pattern, value):
        context.add(path, "pattern", f"{value!r} does not match {pattern!r}")


def _jtype(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


@cache
def _compiled(pattern: str) -> re.Pattern | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _fullmatch(pattern: str, value: str) -> bool:
    compiled = _compiled(pattern)
    return True if compiled is None else bool(compiled.fullmatch(value))


@cache
def load_document() -> DiscoveryDocument:
    """The installed Compute v1 discovery document (parsed once per process)."""
    return DiscoveryDocument()
