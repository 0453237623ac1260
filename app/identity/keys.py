"""Typed identifiers: normalization, validation and index keys (pure).

An identifier is a (type, value) pair. Types are snake_case names (`customer_id`, `email`,
`phone`, `line_uid`, `braze_external_id`, ...) or `air_identity:<TYPE>`. E-mails are lower-cased
and trimmed, phones become E.164 (read in the configured default region); other values are
trimmed text. Invalid values raise `Rejected` with a reason and are never stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from app.envelope import Rejected
from app.normalize.common import clean_email, clean_phone, text

MAX_UNIFY_KEYS = 3
MAX_VALUE_LEN = 256
_TYPE = re.compile(r"^(?:[a-z][a-z0-9_]{0,63}|air_identity:[A-Z0-9_]{1,64})$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def normalize_identifier(kind: str, raw: Any, region: str) -> str:
    """The canonical value of one identifier, or Rejected(code, reason without the value)."""
    if not isinstance(kind, str) or not _TYPE.match(kind):
        raise Rejected("invalid_type", "identifier type is not snake_case or air_identity:<TYPE>")
    if kind == "email":
        value = clean_email(raw)
        if value is None:
            raise Rejected("invalid_email", "email is not a valid address")
        return value
    if kind == "phone":
        value = clean_phone(raw, region)
        if value is None:
            raise Rejected("invalid_phone", "phone is not a valid number")
        return value
    value = text(raw)
    if not value:
        raise Rejected("empty", f"{kind} is empty")
    if len(value) > MAX_VALUE_LEN or _CONTROL.search(value):
        raise Rejected("invalid_value", f"{kind} is too long or holds control characters")
    return value


def clean_identities(ids: Mapping[str, Any], region: str) -> tuple[dict[str, str], list[str]]:
    """Normalize an envelope's identities: (valid ones, ["<type>: <reason code>", ...])."""
    clean: dict[str, str] = {}
    rejected: list[str] = []
    for kind, raw in ids.items():
        try:
            clean[kind] = normalize_identifier(kind, raw, region)
        except Rejected as exc:
            rejected.append(f"{kind}: {exc.code}")
    return clean, rejected


def key_of(kind: str, value: str) -> str:
    """The index key (and Kafka key) of an identifier, spelled like an envelope's customer_key."""
    return f"{kind}:{value}"


def parse_unify_keys(raw: str | Iterable[str]) -> tuple[str, ...]:
    """`line_uid,email,phone` -> ('line_uid', 'email', 'phone'); ValueError when invalid."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    kinds = tuple(dict.fromkeys(k.strip() for k in items if k.strip()))
    if not kinds:
        raise ValueError("at least one unify key is needed")
    if len(kinds) > MAX_UNIFY_KEYS:
        raise ValueError(f"at most {MAX_UNIFY_KEYS} unify keys, got {len(kinds)}")
    for kind in kinds:
        if not _TYPE.match(kind):
            raise ValueError(f"{kind!r} is not an identifier type")
    return kinds


def lookup_order(ids: Mapping[str, str], unify: tuple[str, ...]) -> list[tuple[str, str]]:
    """(type, key) pairs in the order the index is asked: unify keys first (configured order),
    then the other identifiers (sorted, so every worker asks in the same order)."""
    first = [(k, key_of(k, ids[k])) for k in unify if k in ids]
    rest = [(k, key_of(k, v)) for k, v in sorted(ids.items()) if k not in unify]
    return first + rest


def mask(kind: str, value: str) -> str:
    """An identifier fit for an unauthenticated caller: enough to recognise, not to use."""
    if kind == "email" and "@" in value:
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    if kind == "phone":
        return value[:4] + "*" * max(len(value) - 6, 0) + value[-2:]
    if len(value) <= 4:
        return "***"
    return value[:2] + "***" + value[-2:]
