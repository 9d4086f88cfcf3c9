"""Filters of the ``sqlite`` store: OpenAI vector store filters compiled to parameterised SQL."""

from __future__ import annotations

import math
import re
from typing import Any

from chorus.errors import InvalidRequest

MAX_FILTER_NODES = 64
MAX_FILTER_DEPTH = 8
MAX_IN_VALUES = 500
_BAD_KEY = re.compile(r'["\\\x00-\x1f]')

_COMPARISONS = {"eq": "=", "ne": "IS NOT", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _scalar(value: Any, where: str) -> str | int | float | bool:
    if isinstance(value, bool | int | str) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise InvalidRequest(f"{where}: value must be a string, number or boolean", param="filters")


def compile_filter(spec: dict[str, Any], column: str = "c.attributes") -> tuple[str, list[Any]]:
    """SQL boolean expression and its parameters for an OpenAI vector store filter.

    Keys and values are always bound parameters; ``column`` is a trusted identifier. A missing
    attribute never equals anything, so ``ne`` and ``nin`` match it. Ordering comparisons only
    hold between values of the same kind (numbers with numbers, strings with strings).
    """
    nodes = 0

    def walk(node: Any, depth: int) -> tuple[str, list[Any]]:
        nonlocal nodes
        nodes += 1
        if nodes > MAX_FILTER_NODES or depth > MAX_FILTER_DEPTH:
            raise InvalidRequest("filters: too large or too deeply nested", param="filters")
        if not isinstance(node, dict):
            raise InvalidRequest("filters: each filter must be an object", param="filters")
        kind = node.get("type")
        if kind in ("and", "or"):
            children = node.get("filters")
            if not isinstance(children, list) or not children or set(node) - {"type", "filters"}:
                raise InvalidRequest(f"filters: '{kind}' takes a non-empty 'filters' list", param="filters")
            parts = [walk(child, depth + 1) for child in children]
            joiner = " AND " if kind == "and" else " OR "
            return "(" + joiner.join(p for p, _ in parts) + ")", [v for _, ps in parts for v in ps]
        if kind not in _COMPARISONS and kind not in ("in", "nin"):
            raise InvalidRequest(f"filters: unknown filter type {kind!r}", param="filters")
        key = node.get("key")
        if (not isinstance(key, str) or not 0 < len(key) <= 64 or _BAD_KEY.search(key)
                or set(node) - {"type", "key", "value"}):
            raise InvalidRequest("filters: 'key' must be a string of 1-64 characters without quotes", param="filters")
        if "value" not in node:
            raise InvalidRequest(f"filters: {kind!r} filter on {key!r} needs a 'value'", param="filters")
        path = '$."' + key + '"'
        value = node["value"]
        extract = f"json_extract({column}, ?)"
        if kind in ("in", "nin"):
            if not isinstance(value, list) or len(value) > MAX_IN_VALUES:
                raise InvalidRequest(f"filters: {kind!r} takes a list of at most {MAX_IN_VALUES} values",
                                     param="filters")
            values = [_scalar(v, f"filters: {kind} on {key!r}") for v in value]
            if not values:
                return ("0" if kind == "in" else "1"), []
            marks = ",".join("?" * len(values))
            if kind == "in":
                return f"({extract} IN ({marks}))", [path, *values]
            return f"({extract} IS NULL OR {extract} NOT IN ({marks}))", [path, path, *values]
        scalar = _scalar(value, f"filters: {kind} on {key!r}")
        if kind in ("eq", "ne"):
            return f"({extract} {_COMPARISONS[kind]} ?)", [path, scalar]
        kinds = "('text')" if isinstance(scalar, str) else "('integer','real','true','false')"
        return (f"(json_type({column}, ?) IN {kinds} AND {extract} {_COMPARISONS[kind]} ?)",
                [path, path, scalar])

    return walk(spec, 0)
