"""Normalizers: one pure function per ingress topic, raw upstream JSON -> canonical envelopes.

`SOURCES` maps a source name to (ingress topic, normalize function); `normalize_bytes` parses the
raw Kafka value and dispatches. Every normalizer raises only `Rejected(code, detail)` with a
bounded `code` (`invalid_json`, `not_an_object`, `missing_field`, `invalid_value`,
`unsupported`) and a `detail` without personal data.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from app.config import Settings
from app.envelope import Rejected
from app.normalize import air, annex, audience, identity, journey, maac, sessionm
from app.normalize.common import is_mapping

Normalizer = Callable[[Any, Mapping[str, str], Settings], list[dict]]

REJECT_CODES = ("invalid_json", "not_an_object", "missing_field", "invalid_value", "unsupported")


def _guarded(fn: Normalizer) -> Normalizer:
    """Last line of defence: a bug on odd input becomes a Rejected, never a crashed agent."""

    @functools.wraps(fn)
    def normalize(value: Any, headers: Mapping[str, str], settings: Settings) -> list[dict]:
        if not is_mapping(value):
            raise Rejected("not_an_object", "value must be a JSON object")
        try:
            return fn(value, headers or {}, settings)
        except Rejected:
            raise
        except Exception as exc:
            raise Rejected("invalid_value", f"unreadable record ({type(exc).__name__})") from exc

    normalize.unguarded = fn  # type: ignore[attr-defined]
    return normalize


SOURCES: dict[str, tuple[str, Normalizer]] = {
    "air": ("air.outbound", _guarded(air.normalize)),
    "annex": ("loyalty.actions", _guarded(annex.normalize)),
    "journey": ("journey.triggers", _guarded(journey.normalize)),
    "audience": ("audience.membership", _guarded(audience.normalize)),
    "identity": ("identity.updates", _guarded(identity.normalize)),
    "sessionm": ("sessionm.messages", _guarded(sessionm.normalize)),
    "maac": ("maac.results", _guarded(maac.normalize)),
}

SOURCE_BY_TOPIC = {topic: source for source, (topic, _) in SOURCES.items()}


def parse_json(raw: bytes | bytearray | memoryview | str | None) -> dict:
    if raw is None:
        raise Rejected("invalid_json", "empty value")
    try:
        value = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        raise Rejected("invalid_json", "value is not valid JSON") from None
    if not isinstance(value, dict):
        raise Rejected("not_an_object", f"value is a JSON {type(value).__name__}, not an object")
    return value


def normalize_bytes(source: str, raw: bytes | None, headers: Mapping[str, str] | None,
                    settings: Settings) -> list[dict]:
    """Parse one raw ingress value and normalize it; raises Rejected."""
    if source not in SOURCES:
        raise Rejected("unsupported", "unknown source")
    value = parse_json(raw)
    return SOURCES[source][1](value, headers or {}, settings)


__all__ = ["REJECT_CODES", "SOURCES", "SOURCE_BY_TOPIC", "normalize_bytes", "parse_json"]
