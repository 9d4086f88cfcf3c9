"""Validate JSON objects against schemas of the official OpenAI OpenAPI spec.

The spec (OpenAPI 3.1, ~90k lines of YAML) lives in ``shared/openai-openapi/openapi.yaml``,
a sibling folder of the repository checkout; ``CHORUS_OPENAI_SPEC`` overrides the path.
It is parsed once per process (~0.5s with libyaml) and validators are cached per schema.

Usage::

    from tests.openapi_spec import requires_spec, validate

    @requires_spec
    def test_completion_shape(body):
        validate(body, "CreateChatCompletionResponse")  # AssertionError listing every error

``validate`` checks against ``#/components/schemas/<name>`` with jsonschema's
Draft 2020-12 validator; ``$ref``s resolve through a ``referencing`` registry holding the
whole spec. OpenAPI leftovers are normalised on load: ``nullable: true`` becomes
``anyOf: [<schema>, {type: "null"}]``; ``discriminator``/``x-*`` keys are ignored (unknown
keywords); ``format`` is not asserted. Without the spec file, tests marked
`requires_spec` skip, and ``validate`` itself skips the calling test.
"""

from __future__ import annotations

import difflib
import functools
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry
from referencing.jsonschema import DRAFT202012

__all__ = [
    "REQUIRED_SCHEMAS",
    "SKIP_REASON",
    "SPEC_PATH",
    "SPEC_URI",
    "errors",
    "is_valid",
    "load_spec",
    "requires_spec",
    "schema_names",
    "spec_available",
    "validate",
    "validator",
]

SPEC_PATH: Path = Path(
    os.environ.get("CHORUS_OPENAI_SPEC")
    or Path(__file__).resolve().parents[1].parent / "shared" / "openai-openapi" / "openapi.yaml"
)
SPEC_URI = "urn:openai:openapi"
REQUIRED_SCHEMAS: tuple[str, ...] = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
    "CreateEmbeddingResponse",
)

# Keys whose values are data (not subschemas) and maps whose values are all subschemas.
_DATA_KEYS = frozenset({"example", "examples", "default", "enum", "const", "discriminator"})
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas",
                          "schemas"})


def spec_available() -> bool:
    return SPEC_PATH.is_file()


SKIP_REASON = (f"OpenAI OpenAPI spec not found at {SPEC_PATH}: set CHORUS_OPENAI_SPEC to a copy of openapi.yaml "
               "from the public openai/openai-openapi repository (README: Run the tests)")
requires_spec = pytest.mark.skipif(not spec_available(), reason=SKIP_REASON)


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe loader that keeps timestamps as strings (JSON has no dates)."""


_Loader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))


def _normalise(node: Any) -> Any:
    """Turn OpenAPI's ``nullable: true`` into JSON Schema; leave data-valued keys untouched."""
    if isinstance(node, list):
        return [_normalise(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DATA_KEYS or key.startswith("x-"):
            out[key] = value
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _normalise(sub) for name, sub in value.items()}
        else:
            out[key] = _normalise(value)
    nullable = out.pop("nullable") if isinstance(out.get("nullable"), bool) else False
    return {"anyOf": [out, {"type": "null"}]} if nullable else out


@functools.cache
def load_spec() -> dict[str, Any]:
    """The parsed, normalised spec (cached). Skips the calling test if the file is missing."""
    if not spec_available():
        pytest.skip(SKIP_REASON)
    with SPEC_PATH.open("rb") as fh:
        return _normalise(yaml.load(fh, Loader=_Loader))


def schema_names() -> frozenset[str]:
    return frozenset(load_spec()["components"]["schemas"])


@functools.cache
def _registry() -> Registry:
    return Registry().with_resource(SPEC_URI, DRAFT202012.create_resource(load_spec()))


@functools.cache
def validator(schema_name: str) -> Draft202012Validator:
    """A cached validator for ``#/components/schemas/<schema_name>``; KeyError if unknown."""
    if schema_name not in schema_names():
        close = difflib.get_close_matches(schema_name, schema_names(), n=5)
        raise KeyError(f"no schema {schema_name!r} in {SPEC_PATH}; close matches: {close}")
    ref = {"$ref": f"{SPEC_URI}#/components/schemas/{schema_name}"}
    return Draft202012Validator(ref, registry=_registry())


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(error: ValidationError) -> str:
    line = f"{error.json_path}: {_short(error.message)}"
    if error.context:  # anyOf/oneOf: say which branch came closest and why it failed
        best = best_match(error.context)
        line += f"\n     closest alternative fails at {best.json_path}: {_short(best.message)}"
    return line


def errors(instance: Any, schema_name: str) -> list[str]:
    """Readable descriptions of every validation error (empty if valid), sorted by path."""
    found = sorted(validator(schema_name).iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    return [_describe(e) for e in found]


def is_valid(instance: Any, schema_name: str) -> bool:
    return validator(schema_name).is_valid(instance)


def validate(instance: Any, schema_name: str) -> None:
    """Raise AssertionError listing all errors if ``instance`` does not match the schema."""
    problems = errors(instance, schema_name)
    if problems:
        listing = "\n  - ".join(problems)
        raise AssertionError(f"{len(problems)} error(s) validating against {schema_name}:\n  - {listing}")
