"""The result's schema: `result.schema.json` (JSON Schema 2020-12, shipped as package data) and a check that
uses the `jsonschema` package when it is installed (a dev extra; the library does not need it to run)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = ["RESULT_SCHEMA", "SCHEMA_ID", "SchemaError", "result_schema", "validate_result"]

SCHEMA_ID = "rtvos.bench/2"


class SchemaError(ValueError):
    """A document does not match the result schema; the message is one line naming the first failing path."""


@lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    text = (resources.files(__package__) / "result.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def result_schema() -> dict[str, Any]:
    """The result schema as a dict (a fresh copy; the file is `rtvos/bench/result.schema.json`)."""
    return json.loads(json.dumps(_load()))


RESULT_SCHEMA: dict[str, Any] = result_schema()


def validate_result(doc: Any, schema: dict[str, Any] | None = None) -> bool:
    """Raise SchemaError (one line) unless `doc` is valid JSON (no NaN/inf) matching the schema.

    Returns True when the schema was checked, False when `jsonschema` is not installed (then only the
    JSON-ness and the schema id are checked)."""
    try:
        json.dumps(doc, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise SchemaError(f"bench result is not plain JSON: {e}") from None
    try:
        import jsonschema
    except ImportError:
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_ID:
            raise SchemaError(f"bench result is not a {SCHEMA_ID} document") from None
        return False
    schema = _load() if schema is None else schema
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    errors = sorted(cls(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.absolute_path)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        msg = " ".join(first.message.split())
        if len(msg) > 200:
            msg = msg[:197] + "..."
        raise SchemaError(f"bench result does not match {SCHEMA_ID}: {where}: {msg}{more}")
    return True
