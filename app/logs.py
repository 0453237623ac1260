"""structlog JSON logging, one event per line, with personal data and secrets redacted.

Redaction happens in a processor, so no call site can forget it: known sensitive keys are masked
and free text is scrubbed of e-mail addresses, phone numbers, LINE uids and bearer tokens.
"""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from typing import Any

import structlog

SENSITIVE_KEYS = {
    "email", "phone", "phone_number", "line_uid", "token", "api_key", "secret", "password",
    "authorization", "identityvalue", "identity_value", "value", "mobile", "identities",
}
_PATTERNS = [
    (re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+"), "[email]"),
    (re.compile(r"\bU[0-9a-f]{32}\b"), "[line_uid]"),
    (re.compile(r"(?i)(bearer|basic)\s+[\w.~+/=-]+"), r"\1 [secret]"),
    # E.164, and national formats with a trunk 0 (0912-345-678, 03 1234 5678)
    (re.compile(r"\+\d[\d\s-]{6,16}\d"), "[phone]"),
    (re.compile(r"(?<![\w:.-])0\d{1,4}[\s-]?\d{3,4}[\s-]?\d{3,4}(?![\w:.-])"), "[phone]"),
]


def scrub(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact(value: Any, key: str = "") -> Any:
    if key.lower() in SENSITIVE_KEYS:
        return "[redacted]"
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


_PLAIN_KEYS = {"timestamp", "level", "logger"}


def _redact_processor(_logger, _name, event_dict: dict) -> dict:
    return {k: v if k in _PLAIN_KEYS else (scrub(str(v)) if k == "event" else redact(v, k))
            for k, v in event_dict.items()}


def configure(level: str = "info", stream=None) -> None:
    stream = stream or sys.stderr
    numeric = getattr(logging, level.upper(), logging.INFO)
    processors = [
        _event_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact_processor,
        structlog.processors.JSONRenderer(),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    # Faust and aiokafka log through stdlib logging: route it through the same redaction.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    _redact_processor, structlog.processors.JSONRenderer()],
        foreign_pre_chain=[structlog.processors.add_log_level,
                           structlog.processors.TimeStamper(fmt="iso", utc=True)],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING) if numeric < logging.WARNING else numeric)


# Upstream ids copied from an envelope's `trace` onto every log line about the event.
TRACE_LOG_KEYS = ("eesEventId", "eesMasterEventId", "idempotency_key", "journey_id", "trigger_id",
                  "origin")


# The event the current task is working on, set once per event. Its ids are read only when a line
# is written, which few events cause: structlog's own contextvars cost a clear and a bind per
# event (~2.5 % of the worker's CPU in `relay bench`).
_CURRENT_EVENT: ContextVar[tuple[dict | None, dict[str, Any]]] = ContextVar(
    "relay_log_event", default=(None, {}))


def bind_event(envelope: dict | None = None, **ids: Any) -> None:
    """Make the event id and upstream ids (eesEventId, MAAC idempotency key, journey id, ...) of
    `envelope`, with `ids`, the context of the current task's log lines, replacing the previous
    event's. Call once per event."""
    _CURRENT_EVENT.set((envelope, ids))


def event_ids(envelope: dict | None, ids: dict[str, Any]) -> dict[str, Any]:
    if envelope:
        trace = envelope.get("trace") or {}
        ids = {"event_id": envelope.get("event_id"), "event_type": envelope.get("type"),
               **{k: trace[k] for k in TRACE_LOG_KEYS if trace.get(k)}, **ids}
    return {k: v for k, v in ids.items() if v}


def _event_context(_logger, _name, event_dict: dict) -> dict:
    for key, value in event_ids(*_CURRENT_EVENT.get()).items():
        event_dict.setdefault(key, value)
    return event_dict
