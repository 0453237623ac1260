"""Helpers shared by the normalizers: identity cleaning, key spelling, tolerant field access.

Everything here is pure and never raises anything but `Rejected` on bad input.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson
import phonenumbers

from app.envelope import Rejected, format_utc, parse_time, parse_time_text, utc_iso

_CAMEL_1 = re.compile(r"(.)([A-Z][a-z]+)")
_CAMEL_2 = re.compile(r"([a-z0-9])([A-Z])")
_NON_WORD = re.compile(r"[^0-9a-zA-Z]+")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

EMPTY = (None, "", [], {})
# Hot paths write `v not in EMPTY` as `v or v not in EMPTY`: a truthy JSON value is never one of
# EMPTY, so the four comparisons are only made for falsy values.

# Types that are never a Mapping: `isinstance(x, Mapping)` goes through ABCMeta (~150 ns a call)
# while the values seen here are nearly always plain dicts or JSON scalars.
_NOT_MAPPINGS = frozenset({str, int, float, bool, type(None), list})
_SCALARS = frozenset({str, int, float, bool, type(None)})


def is_mapping(value: Any) -> bool:
    """`isinstance(value, Mapping)`, answered directly for plain dicts and JSON scalars."""
    kind = type(value)
    if kind is dict:
        return True
    if kind in _NOT_MAPPINGS:
        return False
    return isinstance(value, Mapping)


def snake_case(text: Any) -> str:
    """`Cart Abandonment` / `cartAbandonment` / `CART-ABANDONMENT` -> `cart_abandonment`."""
    if text is None:
        return ""
    return _snake(text if isinstance(text, str) else str(text))


@functools.lru_cache(maxsize=8192)
def _snake(text: str) -> str:
    text = text.strip()
    text = _CAMEL_1.sub(r"\1_\2", text)
    text = _CAMEL_2.sub(r"\1_\2", text)
    text = _NON_WORD.sub("_", text)
    return text.strip("_").lower()


def camel_case(text: str) -> str:
    """`WALLET_ACCOUNT_ENTITY` / `wallet_account_entity` -> `walletAccountEntity`."""
    parts = [p for p in snake_case(text).split("_") if p]
    if not parts:
        return ""
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def dig(doc: Any, *path: Any, default: Any = None) -> Any:
    """`dig(doc, "a", "b", 0)`: nested dict/list access that never raises."""
    current = doc
    for part in path:
        if is_mapping(current):
            if part not in current:
                return default
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int):
            if not -len(current) <= part < len(current):
                return default
            current = current[part]
        else:
            return default
    return default if current is None else current


def first(doc: Any, *names: str, default: Any = None) -> Any:
    """The first non-empty value among several spellings of a field (`customerId`, ...)."""
    if not isinstance(doc, dict) and not isinstance(doc, Mapping):
        return default
    for name in names:
        value = doc.get(name)
        if value or value not in EMPTY:
            return value
    return default


def as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    if isinstance(value, list):
        return value
    if value in EMPTY:
        return []
    return [value]


def text(value: Any) -> str | None:
    """A scalar as a trimmed string; None for empty values and containers."""
    kind = type(value)  # JSON strings and integers first: most calls, and no checks needed
    if kind is str:
        return value.strip() or None
    if kind is int:
        return str(value)
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    result = str(value).strip()
    return result or None


def number(value: Any) -> int | float | None:
    """A number from a number or a numeric string; None otherwise."""
    if type(value) is int:
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value
    if isinstance(value, str):
        try:
            parsed = float(value.strip())
        except ValueError:
            return None
        if not math.isfinite(parsed):
            return None
        return int(parsed) if parsed.is_integer() and "." not in value else parsed
    return None


def boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        lowered = lowered.replace("-", "_").replace(" ", "_")
        if lowered in {"true", "yes", "y", "1", "on", "opt_in", "optin", "opted_in", "subscribed",
                       "granted", "consented", "allowed"}:
            return True
        if lowered in {"false", "no", "n", "0", "off", "opt_out", "optout", "opted_out",
                       "unsubscribed", "denied", "revoked", "withdrawn", "declined"}:
            return False
    return None


def header(headers: Mapping[str, Any] | None, name: str) -> str | None:
    """A Kafka header by case-insensitive name, decoded to str."""
    if not headers:
        return None
    lowered = name.lower()
    try:
        items = headers.items()
    except AttributeError:
        return None
    for key, value in items:
        if str(key).lower() == lowered:
            if isinstance(value, (bytes, bytearray)):
                value = bytes(value).decode("utf-8", "replace")
            return text(value)
    return None


def time_or_none(raw: Any) -> datetime | None:
    if raw in EMPTY:
        return None
    try:
        # An ingress time is read once: parsed without parse_time's cache, which serves the
        # later stages that read an envelope's time again (and whose entries it would evict).
        return parse_time_text(raw) if type(raw) is str else parse_time(raw)
    except (Rejected, ValueError, OverflowError, OSError):
        return None


def require_time(raw: Any, field: str) -> datetime:
    """A timestamp that must be there and readable."""
    if raw in EMPTY:
        raise Rejected("missing_field", field)
    when = time_or_none(raw)
    if when is None:
        raise Rejected("invalid_value", f"{field} is not a readable timestamp")
    return when


def iso_or_raw(raw: Any) -> Any:
    """A date field normalised to UTC ISO-8601 when readable, else kept as it came."""
    if raw is None:  # an absent date, the commonest case after a string
        return None
    if type(raw) is str:
        return _iso_of_text(raw) or raw
    when = time_or_none(raw)
    return utc_iso(when) if when else raw


@functools.lru_cache(maxsize=1024)
def _iso_of_text(raw: str) -> str | None:
    # Entity dates (starts, expiries) repeat across documents; the string is all it depends on.
    # A miss is parsed and formatted without the time caches: a date missed here (an account's
    # start, the event's own time) is seldom in them, and they would only add two misses.
    try:
        return format_utc(parse_time_text(raw))
    except (Rejected, ValueError, OverflowError, OSError):
        return None


def content_id(*parts: Any) -> str:
    """A stable id from content, for records that carry no id of their own."""
    blob = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(blob).hexdigest()[:32]


def snake_keys(doc: Any) -> Any:
    """Recursively rename dict keys to snake_case (values untouched)."""
    kind = type(doc)
    if kind is dict and len(doc) <= 32:  # small objects only: the cache holds their key sets
        names = _key_names(tuple(doc))
        if names is _SAME_NAMES:
            if _SCALARS.issuperset(map(type, doc.values())):
                return dict(doc)  # keys already snake_case, values all scalars: a plain copy
            names = tuple(doc)
        if names is not None:
            # Scalar values (most of them) are kept without a call.
            return {name: v if type(v) in _SCALARS else snake_keys(v)
                    for name, v in zip(names, doc.values())}
    if kind is dict or (kind not in _NOT_MAPPINGS and isinstance(doc, Mapping)):
        return {key_name(k): v if type(v) in _SCALARS else snake_keys(v) for k, v in doc.items()}
    if kind is list or (kind not in _NOT_MAPPINGS and isinstance(doc, list)):
        return [snake_keys(v) for v in doc]
    return doc


_SAME_NAMES = ("<every key is its own name>",)


@functools.lru_cache(maxsize=4096)
def _key_names(keys: tuple) -> tuple[str, ...] | None:
    """key_name of each key, for the few key sets upstream objects come with (balances, custom
    data): one lookup per object instead of one call per key. _SAME_NAMES when each key is its
    own name (`current`, `points`). None unless every key is a plain str: 1, 1.0 and True are
    equal tuple members but have different names."""
    if any(type(key) is not str for key in keys):
        return None
    names = tuple(key_name(key) for key in keys)
    return _SAME_NAMES if names == keys else names


def key_name(key: Any) -> str:
    """A dict key in snake_case, or the key as text when nothing is left of it (`"--"`)."""
    if type(key) is str:
        return _snake(key) or key
    return snake_case(key) or str(key)


# --- identities -------------------------------------------------------------------------------


def clean_email(raw: Any) -> str | None:
    value = text(raw)
    if not value:
        return None
    return _email(value)


@functools.lru_cache(maxsize=65536)
def _email(value: str) -> str | None:
    # A customer's address comes back with each of their events.
    value = value.lower()
    return value if _EMAIL.match(value) else None


def clean_phone(raw: Any, region: str) -> str | None:
    """E.164, or None when it isn't a valid number (local formats read in `region`)."""
    value = text(raw)
    if not value or len(value) > 40:
        return None
    return _e164(value, region)


@functools.lru_cache(maxsize=65536)
def _e164(value: str, region: str) -> str | None:
    if value.startswith("00"):
        value = "+" + value[2:]
    try:
        parsed = phonenumbers.parse(value, region or None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


# Canonical identity type -> accepted spellings in our own ingress schemas.
ID_ALIASES: dict[str, tuple[str, ...]] = {
    "customer_id": ("customer_id", "customerId", "customerID", "CustomerId", "customer_no",
                    "customerNo", "crm_id", "crmId"),
    "email": ("email", "Email", "email_address", "emailAddress", "e_mail", "mail"),
    "phone": ("phone", "Phone", "phone_number", "phoneNumber", "mobile", "mobile_number",
              "mobileNumber", "msisdn", "tel"),
    "line_uid": ("line_uid", "lineUid", "lineUID", "line_user_id", "lineUserId", "line_id",
                 "lineId"),
    "braze_external_id": ("braze_external_id", "brazeExternalId", "braze_id_external"),
    "sessionm_user_id": ("sessionm_user_id", "sessionmUserId", "sessionm_id", "sessionmId"),
    "insider_uuid": ("insider_uuid", "insiderUuid", "insider_id", "insiderId"),
    "air_wallet_id": ("air_wallet_id", "airWalletId", "wallet_id", "walletId"),
}

ALIAS_TO_ID = {alias: kind for kind, aliases in ID_ALIASES.items() for alias in aliases}


class AliasTable:
    """Identity types and their spellings, best first, indexed by spelling: reading a record
    means one lookup per field it has, not one per spelling we know (about fifty)."""

    MAX_SHAPES = 1024  # key sets remembered (records of a topic come in a few dozen shapes)

    def __init__(self, table: Mapping[str, tuple[str, ...]]):
        self.kinds = tuple(table)
        # spelling -> [(index of the type, rank of the spelling within it), ...]
        self.spellings: dict[str, list[tuple[int, int]]] = {}
        for index, names in enumerate(table.values()):
            for rank, name in enumerate(names):
                places = self.spellings.setdefault(name, [])
                if all(place[0] != index for place in places):  # a repeat ranks as its first
                    places.append((index, rank))
        self._plans: dict[tuple, list[tuple[str, tuple]]] = {}

    def best_values(self, doc: Mapping[str, Any]) -> list[tuple[str, Any]]:
        """(type, value) for each type, from its best-ranked spelling that holds a usable value
        (not empty, not a container), in the table's order of types."""
        found = []
        for kind, names in self._plan(tuple(doc)):
            for name in names:
                value = doc[name]
                if (value or value not in EMPTY) and not isinstance(value, (dict, list)):
                    found.append((kind, value))
                    break
        return found

    def _plan(self, names: tuple) -> list[tuple[str, tuple]]:
        """For a record with these field names: (type, its spellings among them, best first) for
        each type, in the table's order. Records of a topic come in a few shapes, so a record
        costs one lookup of its shape and one read per type it holds."""
        plan = self._plans.get(names)
        if plan is None:
            if len(self._plans) >= self.MAX_SHAPES:
                self._plans.clear()
            candidates: dict[int, list[tuple[int, Any]]] = {}
            for name in names:
                for index, rank in self.spellings.get(name, ()):
                    candidates.setdefault(index, []).append((rank, name))
            plan = self._plans[names] = [
                (self.kinds[index], tuple(name for _rank, name in sorted(candidates[index])))
                for index in sorted(candidates)]
        return plan


DEFAULT_ALIASES = AliasTable(ID_ALIASES)
Aliases = Mapping[str, Iterable[str]] | AliasTable | None


def alias_table(aliases: Aliases) -> AliasTable:
    """ID_ALIASES with a source's own spellings in front (new types after the known ones).
    Sources build theirs once, at import."""
    if isinstance(aliases, AliasTable):
        return aliases
    if not aliases:
        return DEFAULT_ALIASES
    return _alias_table(tuple((kind, tuple(names)) for kind, names in aliases.items()))


@functools.lru_cache(maxsize=64)
def _alias_table(aliases: tuple[tuple[str, tuple[str, ...]], ...]) -> AliasTable:
    table = dict(ID_ALIASES)
    for kind, names in aliases:
        table[kind] = names + tuple(table.get(kind, ()))
    return AliasTable(table)


class Identities:
    """Collects typed identities; the first non-empty value of each type wins.

    An invalid phone is dropped and noted in `rejected` (for `trace.rejected_identifiers`), or
    rejects the whole record when the source needs the phone."""

    def __init__(self, region: str):
        self.region = region
        self.ids: dict[str, str] = {}
        self.rejected: list[str] = []

    def add(self, kind: str, raw: Any, *, required: bool = False) -> str | None:
        if (not raw and raw in EMPTY) or isinstance(raw, (dict, list)):
            return None
        value = (raw.strip() or None) if type(raw) is str else text(raw)  # text(), one call less
        if kind == "email" or kind == "phone":
            return self.add_text(kind, value, required=required)
        if value and kind not in self.ids:  # what add_text does for the other types
            self.ids[kind] = value
        return value

    def add_text(self, kind: str, value: str | None, *, required: bool = False) -> str | None:
        """add() of a value already read with text() (None, or trimmed non-empty text) from a
        raw value that is neither empty nor a container: e-mails and phones are cleaned as
        clean_email and clean_phone clean them, other types kept as they are."""
        if kind == "email":
            value = _email(value) if value else None
            if value is None:
                self._reject("email: invalid", required, "email is not a valid address")
        elif kind == "phone":
            value = _e164(value, self.region) if value and len(value) <= 40 else None
            if value is None:
                self._reject("phone: invalid", required, "phone is not a valid number")
        if value and kind not in self.ids:
            self.ids[kind] = value
        return value

    def _reject(self, note: str, required: bool, detail: str) -> None:
        if required:
            raise Rejected("invalid_value", detail)
        if note not in self.rejected:
            self.rejected.append(note)

    def add_from(self, doc: Any, aliases: Aliases = None, *, keep_unknown: bool = False) -> None:
        """Read every known spelling of every identity type out of a flat dict."""
        if not is_mapping(doc):
            return
        table = alias_table(aliases)
        for kind, value in table.best_values(doc):
            self.add(kind, value)
        if keep_unknown:
            known = table.spellings
            for name, value in doc.items():
                if name in known or value in EMPTY or isinstance(value, (dict, list, bool)):
                    continue
                kind = snake_case(name)
                if kind:
                    self.add(kind, value)

    def trace(self) -> dict[str, Any]:
        return {"rejected_identifiers": list(self.rejected)} if self.rejected else {}


def source_id_of(doc: Mapping[str, Any], *names: str, field: str) -> str:
    value = text(first(doc, *names))
    if not value:
        raise Rejected("missing_field", field)
    return value


def drop_empty(doc: Mapping[str, Any]) -> dict[str, Any]:
    kept = {}
    for key, value in doc.items():  # a loop: on 3.11 a comprehension is one more call
        if value or value not in EMPTY:
            kept[key] = value
    return kept


TIME_FIELDS = ("occurred_at", "occurredAt", "timestamp", "time", "event_time", "eventTime",
               "created_at", "createdAt", "ts")


def occurred_at_of(doc: Mapping[str, Any], *extra: str) -> datetime:
    names = extra + TIME_FIELDS
    raw = first(doc, *names)
    return require_time(raw, names[0])


def customer_identities(doc: Mapping[str, Any], region: str, *blocks: str,
                        aliases: Aliases = None, keep_unknown: bool = False) -> Identities:
    """Identities from a nested block (`customer{...}`, `member{...}`) and from flat fields."""
    ids = Identities(region)
    table = alias_table(aliases)
    for name in blocks or ("customer", "member", "user", "identifiers", "identities"):
        block = doc.get(name)
        if is_mapping(block):
            ids.add_from(block, table, keep_unknown=keep_unknown)
    ids.add_from(doc, table)
    return ids
