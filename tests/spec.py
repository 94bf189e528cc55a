"""Validate responses against the PI Web API 2018 SP1 Swagger file in ../shared/reference.

The specification types polymorphic fields (`TimedValue.Value`, `Response.Content`) as
`object` with no properties; a real server puts numbers, strings and objects there, so such
a bare `object` is read as "any JSON value". Everything else is validated as written.
"""

from __future__ import annotations

import copy
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

REFERENCE = Path(
    os.environ.get(
        "PIDELTA_REFERENCE_DIR", Path(__file__).resolve().parents[2] / "shared" / "reference"
    )
)
SWAGGER = REFERENCE / "piwebapi-2018sp1-swagger.json"


@cache
def swagger() -> dict[str, Any]:
    return json.loads(SWAGGER.read_text())


def _relax(node: Any) -> Any:
    if isinstance(node, dict):
        if (
            node.get("type") == "object"
            and "properties" not in node
            and ("additionalProperties" not in node)
        ):
            return {k: v for k, v in node.items() if k != "type"}
        return {k: _relax(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_relax(v) for v in node]
    return node


@cache
def _definitions() -> dict[str, Any]:
    return _relax(copy.deepcopy(swagger()["definitions"]))


def response_schema(path: str, method: str = "get", status: int = 200) -> dict[str, Any]:
    """The schema the specification gives for one operation's response."""
    op = swagger()["paths"][path][method.lower()]
    schema = op["responses"][str(status)]["schema"]
    return {**_relax(schema), "definitions": _definitions()}


def definition_schema(name: str) -> dict[str, Any]:
    return {"$ref": f"#/definitions/{name}", "definitions": _definitions()}


def validate(instance: Any, schema: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when the instance breaks the schema."""
    jsonschema.Draft4Validator(schema).validate(instance)


def validate_response(instance: Any, path: str, method: str = "get", status: int = 200) -> None:
    validate(instance, response_schema(path, method, status))
