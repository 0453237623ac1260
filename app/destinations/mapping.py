"""Declarative field mapping: literal values, or `$.dotted.path` references into the envelope.

Routing rules carry static parameters; a string starting with `$.` reads a field of the envelope
instead, so one rule can say `{"tier": "$.attributes.tier"}` without code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_MISSING = object()


def get_path(doc: Any, path: str, default: Any = None) -> Any:
    """Read `a.b.0.c` from nested dicts/lists; `default` when any step is missing."""
    current = doc
    for part in path.split("."):
        if isinstance(current, Mapping):
            current = current.get(part, _MISSING)
        elif isinstance(current, list) and part.lstrip("-").isdigit():
            index = int(part)
            current = current[index] if -len(current) <= index < len(current) else _MISSING
        else:
            current = _MISSING
        if current is _MISSING:
            return default
    return current


def resolve(spec: Any, envelope: Mapping[str, Any]) -> Any:
    """Resolve a parameter spec against an envelope, recursively; missing paths become None."""
    if isinstance(spec, str) and spec.startswith("$."):
        return get_path(envelope, spec[2:])
    if isinstance(spec, Mapping):
        return {k: resolve(v, envelope) for k, v in spec.items()}
    if isinstance(spec, list):
        return [resolve(v, envelope) for v in spec]
    return spec


def resolve_present(spec: Mapping[str, Any], envelope: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve a flat mapping and drop the keys whose value is missing or empty."""
    out = {}
    for key, value in spec.items():
        resolved = resolve(value, envelope)
        if resolved not in (None, "", [], {}):
            out[key] = resolved
    return out
