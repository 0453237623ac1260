"""The pure steps of the pipeline, free of Faust, so they are easy to unit-test.

The agents in `app.worker` are short loops that call these and do the I/O.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from app.config import Settings
from app.delivery.backoff import full_jitter
from app.envelope import Rejected, identities_union
from app.normalize import SOURCES, normalize_bytes
from app.routing import Rule, plan

TOPIC_SOURCES = {topic: source for source, (topic, _fn) in SOURCES.items()}


_SECOND: tuple[int, str] = (0, "")  # the last whole second formatted, and its text


def now_iso() -> str:
    """The current UTC time as `YYYY-MM-DDTHH:MM:SS.mmmZ`, the second formatted once per second:
    every outcome carries one (several per event), and datetime's isoformat took ~1.5 % of the
    worker."""
    global _SECOND
    now = time.time()
    second, text = _SECOND
    if int(now) != second:
        second = int(now)
        _SECOND = second, text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{text}.{int((now - second) * 1000):03d}Z"


def origin_of(topic: str, partition: int, offset: int) -> str:
    return f"{topic}/{partition}/{offset}"


def normalize_record(topic: str, value: bytes | None, headers: Mapping[str, bytes],
                     settings: Settings) -> list[dict[str, Any]]:
    """Normalize one ingress record; raises Rejected for input that can't be read."""
    source = TOPIC_SOURCES.get(topic)
    if source is None:
        raise Rejected("unsupported", f"no normalizer for topic {topic}")
    if not value:
        raise Rejected("invalid_json", "empty value")
    text_headers = {k: _text(v) for k, v in headers.items()}
    return normalize_bytes(source, value, text_headers, settings)


def _text(raw: Any) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    return "" if raw is None else str(raw)


def ingress_dead_letter(exc: Rejected, topic: str, partition: int, offset: int,
                        key: bytes | None, value: bytes | None,
                        headers: Iterable[tuple[str, bytes]]) -> dict[str, Any]:
    """The `ingress.dlq` record: the reason, and the original bytes and headers."""
    return {
        "reason_code": exc.code,
        "reason": str(exc),
        "source": TOPIC_SOURCES.get(topic, ""),
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "origin": origin_of(topic, partition, offset),
        "key": _b64(key),
        "value": _b64(value),
        "headers": [[k, _b64(v)] for k, v in headers],
        "at": now_iso(),
    }


def _b64(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = raw.encode()
    return base64.b64encode(raw).decode()


def enrich(envelope: dict[str, Any], known: Mapping[str, Any] | None) -> dict[str, Any]:
    """Attach every identifier the profile knows; the event's own identifiers win conflicts."""
    if known:
        envelope["identities"] = identities_union(envelope.get("identities") or {}, known)
    return envelope


def route(rules: list[Rule], envelope: Mapping[str, Any]) -> list[dict[str, Any]]:
    return plan(rules, envelope)


def next_attempt(delivery: Mapping[str, Any], settings: Settings, reason: str,
                 retry_after_s: float | None = None, in_lane: bool = False) -> dict[str, Any]:
    """The next attempt of a delivery, due after a full-jitter back-off (or the server's ask).

    Entering the retry lane waits longer (the in-process attempts just failed); attempts inside
    the lane use the ordinary back-off, since the lane holds the customer's later items.
    A pause (credentials rejected, breaker open) does not use up the retry budget."""
    from app.delivery.core import PAUSED

    paused = reason.startswith(PAUSED)
    attempt = int(delivery.get("attempt", 0)) + (0 if paused else 1)
    scale = 1 if in_lane else 5
    delay = max(retry_after_s or 0.0,
                full_jitter(max(attempt, 1), max(settings.retry_base_s, 0.05) * scale,
                            settings.retry_max_s * scale))
    return {**delivery, "attempt": attempt, "not_before": time.time() + delay,
            "last_reason": reason}


def delivery_dead_letter(delivery: Mapping[str, Any], reason: str, attempts: int,
                         last_response: Any = None) -> dict[str, Any]:
    return {"delivery": dict(delivery), "reason": reason, "attempts": attempts,
            "last_response": last_response, "at": now_iso()}


def outcome_record(stage: str, status: str, **fields: Any) -> dict[str, Any]:
    return {"stage": stage, "status": status, "at": now_iso(), **fields}


def event_age_s(envelope: Mapping[str, Any]) -> float | None:
    raw = envelope.get("occurred_at")
    if not raw:
        return None
    try:  # Python 3.11 reads the trailing Z itself
        when = datetime.fromisoformat(raw if type(raw) is str else str(raw))
    except ValueError:
        return None
    if when.tzinfo is None:  # envelope times are UTC
        when = when.replace(tzinfo=UTC)
    return max(0.0, time.time() - when.timestamp())
