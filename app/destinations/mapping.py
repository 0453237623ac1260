"""Declarative field mapping: literal values, or `$.dotted.path` references into the envelope.

Routing rules carry static parameters; a string starting with `$.` reads a field of the envelope
instead, so one rule can say `{"tier": "$.attributes.tier"}` without code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_MISSING = object()
_STEPS: dict[str, tuple[tuple[str, int | None], ...]] = {}  # path -> its steps, split once
_STEPS_MAX = 4096  # paths come from the routing rules and the actions: a few hundred at most


def _steps(path: str) -> tuple[tuple[str, int | None], ...]:
    """`path` as (key, list index or None) steps. Cached: every delivery reads several paths
    and splitting them again took about a third of `get_path`."""
    steps = _STEPS.get(path)
    if steps is None:
        if len(_STEPS) >= _STEPS_MAX:
            _STEPS.clear()
        steps = _STEPS[path] = tuple((part, _index(part)) for part in path.split("."))
    return steps


def _index(part: str) -> int | None:
    if not part.lstrip("-").isdigit():
        return None
    try:
        return int(part)
    except ValueError:  # digits int() does not read, such as superscripts
        return None


def get_path(doc: Any, path: str, default: Any = None) -> Any:
    """Read `a.b.0.c` from nested dicts/lists; `default` when any step is missing."""
    current = doc
    for part, index in _steps(path):
        if type(current) is dict or isinstance(current, Mapping):
            current = current.get(part, _MISSING)
        elif index is not None and isinstance(current, list):
            current = current[index] if -len(current) <= index < len(current) else _MISSING
        else:
            current = _MISSING
        if current is _MISSING:
            return default
    return current


def resolve(spec: Any, envelope: Mapping[str, Any]) -> Any:
    """Resolve a parameter spec against an envelope, recursively; missing paths become None."""
    if type(spec) is str:
        return get_path(envelope, spec[2:]) if spec.startswith("$.") else spec
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
