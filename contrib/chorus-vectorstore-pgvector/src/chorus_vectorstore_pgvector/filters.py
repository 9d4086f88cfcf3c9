"""OpenAI vector store filters compiled to parameterised PostgreSQL over the ``attributes`` jsonb column.

Shape: ``{"type": "eq"|"ne"|"gt"|"gte"|"lt"|"lte"|"in"|"nin", "key": ..., "value": ...}`` or
``{"type": "and"|"or", "filters": [...]}``. Semantics match the built-in ``sqlite`` store: a missing
attribute equals nothing, so ``ne`` and ``nin`` match it; numbers compare as numbers whether stored
as integers or floats (jsonb numeric equality). Ordering comparisons hold only between values of the
same JSON type: numbers with numbers, strings with strings (the database's collation), booleans
with booleans.

Keys and values are always bound parameters (``attributes -> $n``, ``$m::jsonb``): a key names one
top-level attribute, dots included. Keys with quotes, backslashes or control characters, unknown
operators, non-scalar values, more than 500 ``in`` values, more than 64 nodes or nesting deeper
than 8 are a 400 ``invalid_request_error`` with ``param = "filters"``.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from chorus.errors import InvalidRequest

MAX_FILTER_NODES = 64
MAX_FILTER_DEPTH = 8
MAX_IN_VALUES = 500
_BAD_KEY = re.compile(r'["\\\x00-\x1f]')
_ORDER = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


class Params:
    """Query parameters collected in order; :meth:`add` returns the placeholder of a new one."""

    def __init__(self, *values: Any) -> None:
        self.values: list[Any] = list(values)

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def clean(value: str) -> str:
    """``value`` as PostgreSQL text can hold it: NUL becomes U+FFFD, lone surrogates ``?``."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def clean_json(value: Any) -> Any:
    """:func:`clean` applied to every string (keys included) of a JSON-like value."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    return value


def _fail(message: str) -> InvalidRequest:
    return InvalidRequest(f"filters: {message}", param="filters")


def _scalar(value: Any, where: str) -> str | int | float | bool:
    if isinstance(value, bool | int | str) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise _fail(f"{where}: value must be a string, number or boolean")


def _json(value: str | int | float | bool) -> str:
    return json.dumps(clean_json(value), ensure_ascii=False)


def _kind(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "boolean"
    return "string" if isinstance(value, str) else "number"


def compile_filter(spec: Any, params: Params, column: str = "c.attributes") -> str:
    """A SQL boolean expression for ``spec``, its values appended to ``params``.

    ``column`` is a trusted identifier; everything from ``spec`` is a bound parameter.
    """
    nodes = 0

    def walk(node: Any, depth: int) -> str:
        nonlocal nodes
        nodes += 1
        if nodes > MAX_FILTER_NODES or depth > MAX_FILTER_DEPTH:
            raise _fail("too large or too deeply nested")
        if not isinstance(node, dict):
            raise _fail("each filter must be an object")
        kind = node.get("type")
        if kind in ("and", "or"):
            children = node.get("filters")
            if not isinstance(children, list) or not children or set(node) - {"type", "filters"}:
                raise _fail(f"'{kind}' takes a non-empty 'filters' list")
            parts = [walk(child, depth + 1) for child in children]
            return "(" + (" AND " if kind == "and" else " OR ").join(parts) + ")"
        if kind not in _ORDER and kind not in ("eq", "ne", "in", "nin"):
            raise _fail(f"unknown filter type {kind!r}")
        key = node.get("key")
        if (not isinstance(key, str) or not 0 < len(key) <= 64 or _BAD_KEY.search(key)
                or set(node) - {"type", "key", "value"}):
            raise _fail("'key' must be a string of 1-64 characters without quotes")
        if "value" not in node:
            raise _fail(f"{kind!r} filter on {key!r} needs a 'value'")
        value = node["value"]
        if kind in ("in", "nin"):
            if not isinstance(value, list) or len(value) > MAX_IN_VALUES:
                raise _fail(f"{kind!r} takes a list of at most {MAX_IN_VALUES} values")
            values = [_scalar(v, f"{kind} on {key!r}") for v in value]
            if not values:
                return "FALSE" if kind == "in" else "TRUE"
            attribute = f"({column} -> {params.add(clean(key))})"
            listed = f"(SELECT jsonb_array_elements({params.add(json.dumps(clean_json(values)))}::jsonb))"
            if kind == "in":
                return f"({attribute} IN {listed})"
            return f"({attribute} IS NULL OR {attribute} NOT IN {listed})"
        scalar = _scalar(value, f"{kind} on {key!r}")
        attribute = f"({column} -> {params.add(clean(key))})"
        literal = f"{params.add(_json(scalar))}::jsonb"
        if kind == "eq":
            return f"({attribute} = {literal})"
        if kind == "ne":
            return f"({attribute} IS DISTINCT FROM {literal})"
        return f"(jsonb_typeof({attribute}) = '{_kind(scalar)}' AND {attribute} {_ORDER[kind]} {literal})"

    return walk(spec, 0)
