"""A small JSON Schema (2020-12) subset: one declaration both validates bodies and documents them.

Handlers declare request bodies and responses as plain JSON Schema dicts built with the helpers
below; `validate_body` checks a parsed body against one, and `api/openapi.py` copies the same
dicts into the OpenAPI 3.1 document. Response schemas that are shared are wrapped in `Named`
and become `components.schemas` entries.

Supported keywords: `type` (a name or a list of names), `enum`, `minLength`, `maxLength`,
`minimum`, `maximum`, `format: "email"` (documentation only), `properties`, `required`,
`additionalProperties: false`, `items`, `minItems`, `maxItems`, `description`, `anyOf`, and
`Named` schemas in place of sub-schemas (published as `$ref`s). Anything fancier (oneOf for the
services AUTH object, say) a handler validates itself and only documents here.

Errors: `invalid_request` (400, with `field`) for a wrong type, value or missing field;
`unknown_field` (400, with `field`) for a property the schema does not declare.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bindify_appliance.errors import HTTPFacingError, InvalidRequest, UnknownField

__all__ = [
    "ID",
    "TIMESTAMP",
    "Named",
    "array",
    "boolean",
    "integer",
    "nullable",
    "obj",
    "ref",
    "string",
    "validate_body",
]

Schema = dict[str, Any]


@dataclass(frozen=True)
class Named:
    """A schema published under `#/components/schemas/{name}`."""

    name: str
    schema: Schema

    @property
    def ref(self) -> Schema:
        return {"$ref": f"#/components/schemas/{self.name}"}


def ref(value: Schema | Named) -> Any:
    """Keep Named schemas as they are: `api/openapi.py` turns them into `$ref`s (and collects
    their definitions) when it builds the document; the validator looks through them."""
    return value


def string(
    *,
    min_length: int | None = None,
    max_length: int | None = None,
    enum: tuple[str, ...] | None = None,
    fmt: str | None = None,
    description: str | None = None,
) -> Schema:
    out: Schema = {"type": "string"}
    if min_length is not None:
        out["minLength"] = min_length
    if max_length is not None:
        out["maxLength"] = max_length
    if enum is not None:
        out["enum"] = list(enum)
    if fmt is not None:
        out["format"] = fmt
    if description:
        out["description"] = description
    return out


def integer(*, minimum: int | None = None, maximum: int | None = None) -> Schema:
    out: Schema = {"type": "integer"}
    if minimum is not None:
        out["minimum"] = minimum
    if maximum is not None:
        out["maximum"] = maximum
    return out


def boolean() -> Schema:
    return {"type": "boolean"}


def nullable(schema: Schema | Named) -> Schema:
    if isinstance(schema, Named) or "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    out = dict(schema)
    kind = out.get("type")
    out["type"] = [*kind, "null"] if isinstance(kind, list) else [kind, "null"]
    return out


def array(items: Schema | Named, *, max_items: int | None = None) -> Schema:
    out: Schema = {"type": "array", "items": ref(items)}
    if max_items is not None:
        out["maxItems"] = max_items
    return out


def obj(properties: dict[str, Schema | Named], *, required: tuple[str, ...] = ()) -> Schema:
    out: Schema = {
        "type": "object",
        "properties": {name: ref(value) for name, value in properties.items()},
        "additionalProperties": False,
    }
    if required:
        out["required"] = list(required)
    return out


ID = string(description="UUID")
TIMESTAMP = string(description="UTC ISO-8601, e.g. 2026-11-29T10:00:00Z")

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


def _is(kind: str, value: Any) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False  # JSON true is not a number
    return isinstance(value, _TYPES[kind])


def _safe_name(name: object) -> str:
    """A caller-chosen key as it may appear in an error: short and printable."""
    text = "".join(c if c.isprintable() else "?" for c in str(name)[:64])
    return text or "?"


def _fail(field: str, message: str) -> HTTPFacingError:
    return InvalidRequest(message, field=field or None)


def _check(schema: Schema | Named, value: Any, path: str) -> None:
    if isinstance(schema, Named):
        schema = schema.schema
    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                _check(option, value, path)
                return
            except HTTPFacingError as exc:
                errors.append(exc)
        raise errors[0]
    kinds = schema.get("type")
    if kinds is not None:
        names = kinds if isinstance(kinds, list) else [kinds]
        if not any(_is(name, value) for name in names):
            wanted = " or ".join(names)
            raise _fail(path, f"{path or 'body'} must be {wanted}")
    if "enum" in schema and value not in schema["enum"]:
        raise _fail(path, f"{path} must be one of: " + ", ".join(map(str, schema["enum"])))
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise _fail(path, f"{path} is too short")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise _fail(path, f"{path} is too long")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise _fail(path, f"{path} must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise _fail(path, f"{path} must be at most {schema['maximum']}")
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise _fail(path, f"{path} has too many items")
        if len(value) < schema.get("minItems", 0):
            raise _fail(path, f"{path} has too few items")
        if "items" in schema:
            for index, item in enumerate(value):
                _check(schema["items"], item, f"{path}[{index}]")
    if isinstance(value, dict):
        properties: dict[str, Schema] = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            for name in value:
                if name not in properties:
                    shown = _safe_name(name)
                    child = f"{path}.{shown}" if path else shown
                    raise UnknownField(f"unknown field {child!r}", field=child)
        for name in schema.get("required", []):
            if name not in value:
                child = f"{path}.{name}" if path else name
                raise _fail(child, f"{child} is required")
        for name, sub in properties.items():
            if name in value:
                _check(sub, value[name], f"{path}.{name}" if path else name)


def validate_body(schema: Schema, value: Any) -> dict[str, Any]:
    """Check a parsed JSON body; returns it (now known to be an object) or raises 400."""
    if not isinstance(value, dict):
        raise InvalidRequest("the body must be a JSON object")
    _check(schema, value, "")
    return value
