"""JSON Schemas (draft 2020-12) of the records streamkm writes; documented in docs/formats.md.

- ``output``: a JSON value on the assignments topic (``output.topic``, ``output.format = "json"``);
- ``model-topic``: the JSON header of a record on the group model's topic
  (``group.model_topic``: the ``SKMG`` format of :mod:`streamkm.group.wire`);
- ``model-export``: the ``PATH.json`` that ``streamkm model export`` writes.

Standard library only; validating needs a JSON Schema library (the tests use
``jsonschema``).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["SCHEMAS", "load_schema"]

#: Names of the shipped schemas (``<name>.schema.json`` in this package).
SCHEMAS = ("output", "model-topic", "model-export")


def load_schema(name: str) -> dict[str, Any]:
    """The schema *name* (one of :data:`SCHEMAS`) as a dict.

    Examples
    --------
    >>> load_schema("output")["$schema"]
    'https://json-schema.org/draft/2020-12/schema'
    """
    if name not in SCHEMAS:
        raise ValueError(f"unknown schema {name!r}; one of {', '.join(SCHEMAS)}")
    text = resources.files(__package__).joinpath(f"{name}.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
