"""OpenAI vector store filters compiled to Qdrant payload filters over ``attributes``.

Shape: ``{"type": "eq"|"ne"|"gt"|"gte"|"lt"|"lte"|"in"|"nin", "key": ..., "value": ...}`` or
``{"type": "and"|"or", "filters": [...]}``. Semantics match the built-in ``sqlite`` store: a
missing attribute equals nothing, so ``ne`` and ``nin`` match it; numbers compare as numbers
whether stored as integers or floats. One difference: Qdrant has no ordering of strings, so
``gt``/``gte``/``lt``/``lte`` take numbers only (anything else is an ``InvalidRequest``).

Keys and values never become query syntax: a key is always a quoted JSON path segment
(``attributes."<key>"``), and keys containing quotes, backslashes or control characters are
refused, as are malformed, oversized or too deeply nested filters.
"""

from __future__ import annotations

import math
import re
from typing import Any

from qdrant_client import models

from chorus.errors import InvalidRequest

MAX_FILTER_NODES = 64
MAX_FILTER_DEPTH = 8
MAX_IN_VALUES = 500
_BAD_KEY = re.compile(r'["\\\x00-\x1f]')
_RANGES = {"gt", "gte", "lt", "lte"}

Scalar = str | int | float | bool
Compiled = models.Condition | bool  # True: no restriction; False: matches nothing


def _fail(message: str) -> InvalidRequest:
    return InvalidRequest(f"filters: {message}", param="filters")


def _scalar(value: Any, where: str) -> Scalar:
    if isinstance(value, bool | int | str) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise _fail(f"{where}: value must be a string, number or boolean")


def _equals(path: str, value: Scalar) -> models.Condition:
    if isinstance(value, bool | str):
        return models.FieldCondition(key=path, match=models.MatchValue(value=value))
    return models.FieldCondition(key=path, range=models.Range(gte=value, lte=value))


def _all(conditions: list[Compiled]) -> Compiled:
    if any(c is False for c in conditions):
        return False
    kept = [c for c in conditions if not isinstance(c, bool)]  # the rest are True
    if not kept:
        return True
    return kept[0] if len(kept) == 1 else models.Filter(must=kept)


def _any(conditions: list[Compiled]) -> Compiled:
    if any(c is True for c in conditions):
        return True
    kept = [c for c in conditions if not isinstance(c, bool)]  # the rest are False
    if not kept:
        return False
    return kept[0] if len(kept) == 1 else models.Filter(should=kept)


def _not(condition: Compiled) -> Compiled:
    if isinstance(condition, bool):
        return not condition
    return models.Filter(must_not=[condition])


def compile_filter(spec: Any, prefix: str = "attributes") -> Compiled:
    """The Qdrant condition equivalent to ``spec``, or ``True``/``False`` when it is constant.

    Raises :class:`~chorus.errors.InvalidRequest` (``param="filters"``) for a malformed filter.
    """
    nodes = 0

    def walk(node: Any, depth: int) -> Compiled:
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
            compiled = [walk(child, depth + 1) for child in children]
            return _all(compiled) if kind == "and" else _any(compiled)
        if kind not in ("eq", "ne", "in", "nin") and kind not in _RANGES:
            raise _fail(f"unknown filter type {kind!r}")
        key = node.get("key")
        if (not isinstance(key, str) or not 0 < len(key) <= 64 or _BAD_KEY.search(key)
                or set(node) - {"type", "key", "value"}):
            raise _fail("'key' must be a string of 1-64 characters without quotes")
        if "value" not in node:
            raise _fail(f"{kind!r} filter on {key!r} needs a 'value'")
        path = f'{prefix}."{key}"'
        value = node["value"]
        if kind in ("in", "nin"):
            if not isinstance(value, list) or len(value) > MAX_IN_VALUES:
                raise _fail(f"{kind!r} takes a list of at most {MAX_IN_VALUES} values")
            values = [_scalar(v, f"{kind} on {key!r}") for v in value]
            strings = [v for v in values if isinstance(v, str)]
            others: list[Compiled] = [_equals(path, v) for v in values if not isinstance(v, str)]
            if strings:
                others.append(models.FieldCondition(key=path, match=models.MatchAny(any=list(dict.fromkeys(strings)))))
            found = _any(others)
            return found if kind == "in" else _not(found)
        scalar = _scalar(value, f"{kind} on {key!r}")
        if kind == "eq":
            return _equals(path, scalar)
        if kind == "ne":
            return _not(_equals(path, scalar))
        if isinstance(scalar, bool | str):
            raise _fail(f"{kind!r} on {key!r} compares numbers only in this vector store")
        return models.FieldCondition(key=path, range=models.Range(**{kind: scalar}))

    return walk(spec, 0)
