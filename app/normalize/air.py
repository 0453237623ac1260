"""Eagle Eye AIR outbound events (`air.outbound`) -> envelopes.

AIR posts one document per event: `headers`, `request`, `response`, `atomicOperations` and
`enrichmentData` (see contracts/air.md). Real payloads are messy, so everything here is tolerant:
bodies may be JSON strings, objects or null; `enrichmentData` may be an object, `[]`, a
non-standard identities map or missing; object types come in camelCase or UPPER_SNAKE_CASE;
dates often lack a timezone (UTC). Unknown event names become one `air.unmapped` envelope and
unknown object types are kept under `payload.extra`.

Identities: the configured type (`settings.air_customer_identity`) -> `customer_id`, EMAIL ->
`email`, MOBILE/PHONE -> `phone` (E.164), every identity also as `air_identity:<TYPE>`, and the
wallet id as `air_wallet_id`.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from app.config import Settings
from app.envelope import Rejected, make_envelope, utc_iso
from app.normalize.common import (
    EMPTY,
    Identities,
    as_dict,
    as_list,
    boolean,
    camel_case,
    dig,
    drop_empty,
    first,
    is_mapping,
    iso_or_raw,
    key_name,
    number,
    snake_case,
    snake_keys,
    text,
    time_or_none,
)

SOURCE = "air"

WALLET = "walletEntity"
IDENTITY = "walletIdentityEntity"
CONSUMER = "walletConsumerEntity"
ACCOUNT = "walletAccountEntity"
ACCOUNT_TXN = "walletAccountTransactionEntity"
WALLET_TXN = "walletTransactionEntity"
TIER = "tierMembershipEntity"
TIER_TXN = "tierMembershipTransactionEntity"

KNOWN_OBJECT_TYPES = (WALLET, IDENTITY, CONSUMER, ACCOUNT, ACCOUNT_TXN, WALLET_TXN, TIER, TIER_TXN)
_OBJECT_TYPE_BY_KEY = {t.lower(): t for t in KNOWN_OBJECT_TYPES}

EMAIL_TYPES = {"EMAIL", "EMAIL_ADDRESS", "E_MAIL"}
PHONE_TYPES = {"MOBILE", "PHONE", "MOBILE_NUMBER", "PHONE_NUMBER", "MSISDN", "TEL"}
LINE_TYPES = {"LINE_UID", "LINE_USER_ID", "LINE"}

TRACE_HEADERS = ("eesEventId", "eesMasterEventId", "eventName", "unitId", "clientId",
                 "eesApiVersion", "externalMessageId")
KNOWN_HEADERS = {*TRACE_HEADERS, "eventDate", "eventTime", "timestamp", "unitFriendlyName",
                 "callerIp", "eesEnvironmentType", "eesSubsystemId"}
KNOWN_DOCUMENT_KEYS = {"headers", "request", "response", "atomicOperations", "enrichmentData"}

# Fields of each known entity that the handlers read, or that are pure bookkeeping (creation and
# update stamps, the wallet id every object repeats, identity secrets). Anything else an entity
# carries is kept under `payload.extra.fields.<objectType>` so no upstream fact is lost.
_STAMPS = {"walletId", "dateCreated", "lastUpdated", "dateUpdated"}
READ_FIELDS: dict[str, set[str]] = {
    "walletEntity": _STAMPS | {"id", "type", "status", "state"},
    "walletIdentityEntity": _STAMPS | {"identityId", "type", "value", "safeValue", "secret",
                                       "state", "status", "dates", "identities", "friendlyName"},
    "walletConsumerEntity": _STAMPS | {"consumerId", "id", "data", "friendlyName"},
    "walletAccountEntity": _STAMPS | {"accountId", "id", "type", "clientType", "status", "state",
                                      "campaignId", "balances", "dates", "relationships", "event",
                                      "expiryDate"},
    "walletAccountTransactionEntity": _STAMPS | {
        "accountTransactionId", "transactionId", "id", "accountId", "walletTransactionId",
        "event", "value", "account", "balancesBefore", "balancesAfter", "type", "clientType",
        "status", "campaignId", "balances"},
    "walletTransactionEntity": _STAMPS | {
        "walletTransactionId", "transactionId", "id", "parentWalletTransactionId", "reference",
        "type", "status", "location", "phase", "fulfilmentPhase", "basket", "currency",
        "currencyCode", "value", "totalValue", "triggers"},
    "tierMembershipEntity": _STAMPS | {
        "tierMembershipId", "membershipId", "id", "tierId", "tierName", "name", "balances",
        "expiryDate", "expiry_date", "dates", "previousTierId", "tierIdBefore", "direction"},
    "tierMembershipTransactionEntity": _STAMPS | {
        "transactionType", "type", "tierId", "tierIdAfter", "toTierId", "newTierId", "tierAfter",
        "tierIdBefore", "fromTierId", "previousTierId", "tierBefore", "direction", "event",
        "balances", "value", "amount", "tierMembershipId"},
}
CONSUMER_DATA_FIELDS = {"personal", "contact", "contacts", "communication", "communications",
                        "optin", "email", "phone", "mobile", "language", "locale"}

_WALLET_IN_PATH = re.compile(r"/wallets?/(\d+)")

POINTS_EVENT_TYPES = {
    "EARN": "loyalty.points.earned",
    "CREDIT": "loyalty.points.credited",
    "DEBIT": "loyalty.points.debited",
    "SPEND": "loyalty.points.spent",
    "REFUND_DEBIT": "loyalty.points.refunded",
    "REFUND": "loyalty.points.refunded",
    "LOCK": "loyalty.points.locked",
    "VOID": "loyalty.points.voided",
}
COUPON_EVENT_TYPES = {
    "REDEEM": "loyalty.coupon.redeemed",
    "UNREDEEM": "loyalty.coupon.unredeemed",
    "CREATE": "loyalty.coupon.issued",
    "ISSUE": "loyalty.coupon.issued",
}


def object_type(raw: Any) -> str:
    """`WALLET_ACCOUNT_ENTITY`, `walletAccountEntity`, `WalletAccountEntity` -> one form."""
    return _object_type(text(raw) or "")


@functools.lru_cache(maxsize=1024)
def _object_type(name: str) -> str:
    # A handful of spellings, met in every operation of every document.
    key = re.sub(r"[^0-9a-z]", "", name.lower())
    return _OBJECT_TYPE_BY_KEY.get(key) or camel_case(name) or "unknown"


def parse_body(raw: Any) -> Any:
    """A request/response body: JSON string -> parsed, object kept, non-JSON text kept as text."""
    if type(raw) is dict:  # most parts of a document arrive as objects already
        return raw
    if isinstance(raw, (bytes, bytearray)):
        raw = bytes(raw).decode("utf-8", "replace")
    if isinstance(raw, str):
        stripped = raw.strip()
        if not stripped:
            return None
        try:
            return orjson.loads(stripped)
        except orjson.JSONDecodeError:
            return raw
    return raw


@dataclass(slots=True)
class Op:
    type: str
    operation: str
    value: dict
    raw_type: str


def operation_names(item: Mapping) -> tuple[str, str, str]:
    """(object type as sent, its one form, operation in upper case) of an atomic operation."""
    raw_type = item.get("objectType")
    operation = item.get("operationType")
    if type(raw_type) is str and raw_type and type(operation) is str and operation:
        return _operation_names(raw_type, operation)  # the usual spelling: one lookup
    raw_type = first(item, "objectType", "object_type", "ObjectType")
    operation = first(item, "operationType", "operation_type")
    return _names_of(text(raw_type) or "", text(operation) or "")


@functools.lru_cache(maxsize=1024)
def _operation_names(raw_type: str, operation: str) -> tuple[str, str, str]:
    # A few dozen (object type, operation) pairs, met in every document.
    return _names_of(raw_type.strip(), operation.strip())


def _names_of(raw_type: str, operation: str) -> tuple[str, str, str]:
    return raw_type, object_type(raw_type), operation.upper()


_UNREAD = object()  # a document fact not computed yet (None is a valid value)


class AirDoc:
    """One AIR document, parsed once, with the lookups the handlers need."""

    def __init__(self, doc: Mapping[str, Any], settings: Settings):
        self.doc = doc
        headers = parse_body(doc.get("headers"))  # seen as a JSON string in hand-made payloads
        if not is_mapping(headers):
            raise Rejected("missing_field", "headers")
        self.headers = headers
        self.event_name = event_name_of(headers.get("eventName"))
        if not self.event_name:
            raise Rejected("missing_field", "headers.eventName")
        source_id = text(first(headers, "eesEventId", "eesMasterEventId", "externalMessageId"))
        if not source_id:
            raise Rejected("missing_field", "headers.eesEventId")
        self.source_id = source_id
        self.settings = settings
        self.request = as_dict(parse_body(doc.get("request")))
        self.response = as_dict(parse_body(doc.get("response")))
        self.request_body = parse_body(self.request.get("body"))
        self.response_body = parse_body(self.response.get("body"))
        self._bodies = [b for b in (self.response_body, self.request_body) if isinstance(b, dict)]
        self.ops: list[Op] = []
        for item in as_list(parse_body(doc.get("atomicOperations"))):
            item = parse_body(item)
            if not is_mapping(item):
                continue
            raw_type, kind, operation = operation_names(item)
            value = parse_body(item.get("objectValue"))
            if type(value) is dict:  # nearly always: one object
                self.ops.append(Op(kind, operation, value, raw_type))
                continue
            # A list of objects is several operations of the same kind.
            values = value if isinstance(value, list) and value and all(
                isinstance(v, dict) for v in value) else [value]
            for one in values:
                self.ops.append(Op(
                    type=kind,
                    operation=operation,
                    value=one if isinstance(one, dict) else {"value": one} if one else {},
                    raw_type=raw_type,
                ))
        # The values of each object type, in operation order: the handlers ask for them by type.
        self._by_type: dict[str, list[dict]] = {}
        for op in self.ops:
            self._by_type.setdefault(op.type, []).append(op.value)
        self.enrichment = parse_body(doc.get("enrichmentData"))
        self.occurred_at = self._occurred_at()
        self.ids = Identities(settings.default_region)
        self._contacts: dict[int, list[dict]] = {}
        self.identity_types: list[str] = []
        self.wallet_id = self._collect_identities()
        self._transactions: list[dict] | None = None
        self._points_transactions: list[dict] | None = None
        self._points_balance: Any = _UNREAD

    # --- lookups --------------------------------------------------------------------------

    def of(self, object_type_: str) -> list[dict]:
        """The values of the operations on one object type, in operation order (the document's
        own list: read it, don't change it)."""
        return self._by_type.get(object_type_) or []

    def last(self, object_type_: str) -> dict:
        found = self._by_type.get(object_type_)
        return found[-1] if found else {}

    def bodies(self) -> list[dict]:
        """The response and request bodies that are objects (the document's own list)."""
        return self._bodies

    def _occurred_at(self) -> datetime:
        for raw in (self.headers.get("eventDate"), self.headers.get("eventTime"),
                    self.headers.get("timestamp")):
            when = time_or_none(raw)
            if when:
                return when
        for op in self.ops:
            for raw in (dig(op.value, "dateUpdated"), dig(op.value, "dateCreated"),
                        dig(op.value, "dates", "updated"), dig(op.value, "dates", "created")):
                when = time_or_none(raw)
                if when:
                    return when
        if self.headers.get("eventDate") in EMPTY:
            raise Rejected("missing_field", "headers.eventDate")
        raise Rejected("invalid_value", "headers.eventDate is not a readable timestamp")

    # --- identities -----------------------------------------------------------------------

    def _identity_records(self) -> tuple[list[Mapping], list[str]]:
        records: list[Mapping] = []  # read only: the document's own records, not copies
        wallet_keys: list[str] = []
        enrichment = self.enrichment
        if is_mapping(enrichment):
            for key, value in enrichment.items():
                key_text = str(key)
                if key_text.lower().startswith("walletentity_"):
                    wallet_keys.append(key_text.split("_", 1)[1])
                if key_text == "identities":
                    take_identities(value, records)
                elif is_mapping(value):
                    take_identities(value.get("identities"), records)
                elif isinstance(value, list):
                    take_identities(value, records)
        elif isinstance(enrichment, list):
            take_identities(enrichment, records)
        for value in self.of(IDENTITY):
            take_identities([value] if "type" in value else value.get("identities"), records)
        for body in self.bodies():
            if "identities" in body:
                take_identities(body["identities"], records)
            if is_mapping(body.get("identity")):
                take_identities([body["identity"]], records)
        return records, wallet_keys

    def _collect_identities(self) -> str | None:
        records, wallet_keys = self._identity_records()
        wallet_candidates: list[Any] = []  # those of the identity records; then _more_wallet_ids
        # Active identities first, so a deleted or suspended one never shadows a live one.
        # (Nearly always all of them are: then the order stands, and list.count says so.)
        if [record.get("status") for record in records].count("ACTIVE") != len(records):
            records.sort(key=is_inactive)
        customer_type = self.settings.air_customer_identity.upper()
        seen: set[tuple[str, str]] = set()
        for record in records:
            value = record.get("value")
            if (not value and value in EMPTY) or isinstance(value, (dict, list)):
                continue
            wallet_candidates.append(record.get("walletId"))
            kind = upper_or_empty(record.get("type"))
            if not kind:
                continue
            if type(value) is str:
                # The same identity read again (in the enrichment, an identity operation and the
                # request body) would add nothing: skipped.
                if (kind, value) in seen:
                    continue
                seen.add((kind, value))
            self._add_identity(kind, value, customer_type)
        for consumer in self.of(CONSUMER):
            for contact in self.contacts(consumer):
                if contact["type"] in ("email", "phone"):
                    self.ids.add(contact["type"], contact["value"])
        for candidate in itertools.chain(wallet_candidates, self._more_wallet_ids(wallet_keys)):
            wallet_id = text(candidate)
            if wallet_id:
                self.ids.ids.setdefault("air_wallet_id", wallet_id)  # what Identities.add does
                return wallet_id
        return None

    def _add_identity(self, kind: str, value: Any, customer_type: str) -> None:
        """One identity record: `air_identity:<TYPE>`, and its canonical type when it has one.
        The value is read once for all its names: plain identifiers go straight into the map,
        as Identities.add would put them; e-mails and phones go through Identities.add_text,
        which cleans them and notes the invalid ones."""
        if kind not in self.identity_types:
            self.identity_types.append(kind)
        found = self.ids.ids
        value_text = text(value)
        if value_text:
            found.setdefault(f"air_identity:{kind}", value_text)  # the first value of a type wins
            if kind == customer_type:
                found.setdefault("customer_id", value_text)
        if kind in EMAIL_TYPES:
            self.ids.add_text("email", value_text)
        elif kind in PHONE_TYPES:
            self.ids.add_text("phone", value_text)
        elif kind in LINE_TYPES and value_text:
            found.setdefault("line_uid", value_text)

    def contacts(self, consumer: Mapping) -> list[dict]:
        """consumer_contacts of one of the document's consumers, read once: the identities and
        the consumer handlers both need them. The list is only read by its callers."""
        key = id(consumer)  # the document holds the consumer, so the id is not reused meanwhile
        found = self._contacts.get(key)
        if found is None:
            found = self._contacts[key] = consumer_contacts(consumer)
        return found

    def _more_wallet_ids(self, wallet_keys: list[str]) -> Iterator[Any]:
        """Where else a wallet id may be, best first. A generator: the identity records nearly
        always have it, so the rest of the document is seldom searched."""
        for value in self.of(WALLET):
            yield first(value, "walletId", "id")
        for op in self.ops:
            yield op.value.get("walletId")
            yield dig(op.value, "account", "walletId")
        yield from wallet_keys
        for body in self.bodies():
            yield body.get("walletId")
            yield dig(body, "wallet", "walletId")
        match = _WALLET_IN_PATH.search(text(self.request.get("resource")) or "")
        if match:
            yield match.group(1)

    # --- shared facts ---------------------------------------------------------------------

    def accounts(self) -> list[dict]:
        seen: dict[str, dict] = {}
        result: list[dict] = []
        for value in self.of(ACCOUNT):
            account = account_of(value)
            key = account.get("account_id")
            if key and key in seen:
                seen[key].update(account)
                continue
            if key:
                seen[key] = account
            result.append(account)
        if not result:
            for body in self.bodies():
                for value in as_list(body.get("accounts")):
                    if is_mapping(value):
                        result.append(account_of(value))
                if result:
                    break
        return result

    # The transactions and the points balance are read once per document: the handler and the
    # derived events all ask for them (a POS settle three times), and none changes them.
    # Plain attributes filled on first use (functools.cached_property takes a lock each time).

    def transactions(self) -> list[dict]:
        if self._transactions is None:
            self._transactions = [transaction_of(v) for v in self.of(ACCOUNT_TXN)]
        return self._transactions

    def points_transactions(self) -> list[dict]:
        """The transactions on POINTS accounts, in operation order."""
        if self._points_transactions is None:
            self._points_transactions = [t for t in self.transactions()
                                         if account_type(t) == "POINTS"]
        return self._points_transactions

    def points_balance(self) -> Any:
        """The last POINTS balance seen, in operation order."""
        if self._points_balance is _UNREAD:
            self._points_balance = self._last_points_balance()
        return self._points_balance

    def _last_points_balance(self) -> Any:
        balance = None
        for op in self.ops:
            if op.type == ACCOUNT and is_points(op.value):
                found = current_balance(op.value.get("balances"))
            elif op.type == ACCOUNT_TXN:
                account = as_dict(op.value.get("account"))
                if not is_points(account) and not is_points(op.value):
                    continue
                found = current_balance(op.value.get("balancesAfter"))
                if found is None:
                    found = current_balance(account.get("balances"))
            else:
                continue
            if found is not None:
                balance = found
        return balance

    def extra(self) -> dict:
        """What the handlers did not read: unknown object types, unknown fields of known
        entities, unknown headers and unknown top-level keys."""
        unknown: dict[str, list] = {}
        fields: dict[str, list] = {}
        for op in self.ops:
            if op.type not in KNOWN_OBJECT_TYPES:
                unknown.setdefault(op.type, []).append(
                    {"operation": op.operation, "value": op.value} if op.operation else op.value)
                continue
            rest = unread_fields(op.type, op.value)
            if rest:
                fields.setdefault(op.type, []).append(rest)
        return drop_empty({
            "objects": unknown,
            "fields": fields,
            "headers": unknown_fields(self.headers, KNOWN_HEADERS),
            "document": unknown_fields(self.doc, KNOWN_DOCUMENT_KEYS),
        })

    def trace(self) -> dict:
        trace = {}
        for name in TRACE_HEADERS:
            value = self.headers.get(name)
            if value or value not in EMPTY:
                trace[name] = value
        trace["eventName"] = self.event_name
        trace.update(self.ids.trace())
        return trace


# --- value helpers ----------------------------------------------------------------------------


def take_identities(raw: Any, records: list[Mapping]) -> None:
    """Append the identity records found in `raw` (a list of records, a record, or a
    non-standard `{"CUSTOMER_ID": "..."}` map) to `records`."""
    if isinstance(raw, list):
        for item in raw:
            if is_mapping(item):
                if "identities" in item and "type" not in item:
                    take_identities(item.get("identities"), records)
                else:
                    records.append(item)
    elif is_mapping(raw):
        if "type" in raw and "value" in raw:
            records.append(raw)
            return
        for kind, value in raw.items():  # non-standard {"CUSTOMER_ID": "..."} map
            for one in as_list(value):
                if not isinstance(one, (dict, list)):
                    records.append({"type": kind, "value": one})


def is_inactive(record: Mapping) -> bool:
    """An identity whose status is set and is not ACTIVE (a deleted or suspended one)."""
    status = record.get("status")
    return not (not status or status == "ACTIVE" or str(status).upper() == "ACTIVE")


def upper_or_empty(raw: Any) -> str:
    """Trimmed upper-case text, "" when empty."""
    if type(raw) is str:  # what text() does for a str, one call less
        return raw.strip().upper()
    return (text(raw) or "").upper()


def event_name_of(raw: Any) -> str:
    """`tier.membership.move `, `TIER_MEMBERSHIP_MOVE` -> `TIER.MEMBERSHIP.MOVE`. Another
    separator is only swapped for dots when that makes a known name; otherwise the name is kept
    as sent (upper case) for `air.unmapped`."""
    return _event_name(text(raw) or "")


@functools.lru_cache(maxsize=1024)
def _event_name(raw: str) -> str:
    # Upstream sends a few dozen event names, each spelled one or two ways.
    name = re.sub(r"\s+", "", raw).upper()
    if name in HANDLERS or name.startswith("WALLET.ACCOUNT.TRANSACTION."):
        return name
    dotted = re.sub(r"[_\-/:]+", ".", name)
    if dotted in HANDLERS:
        return dotted
    prefix = "WALLET.ACCOUNT.TRANSACTION."
    if dotted.startswith(prefix):  # keep the verb's own underscores (REFUND_DEBIT)
        return prefix + name[len(prefix):]
    return name


def unknown_fields(doc: Mapping, known: set[str] | frozenset[str]) -> dict:
    """The non-empty fields of `doc` whose names are not in `known`, in document order."""
    if known.issuperset(doc):  # usually: every name known, and this is one C-level pass
        return {}
    return {k: v for k, v in doc.items() if k not in known and (v or v not in EMPTY)}


def unread_fields(object_type_: str, value: Mapping) -> dict:
    """The fields of a known entity that no handler reads (empty ones dropped)."""
    known = READ_FIELDS.get(object_type_, set())
    if len(value) == 1 and "value" in value and not is_mapping(value.get("value")):
        return {}  # a scalar objectValue wrapped by AirDoc
    rest = unknown_fields(value, known)
    if object_type_ == CONSUMER:
        data = parse_body(value.get("data"))
        if is_mapping(data):
            rest.update({f"data.{k}": v for k, v in data.items()
                         if k not in CONSUMER_DATA_FIELDS and (v or v not in EMPTY)})
    if rest:
        ident = first(value, "accountId", "accountTransactionId", "walletTransactionId",
                      "tierMembershipId", "consumerId", "identityId", "id")
        ident = text(ident)
        if ident:
            rest.setdefault("id", ident)
    return rest


def upper_text(raw: Any) -> str | None:
    """Trimmed upper-case text (`type`, `status`, `event` spellings); None when empty."""
    value = raw.strip() if type(raw) is str else text(raw)  # str: what text() does, one call less
    return value.upper() if value else None


def balances_of(raw: Any) -> dict:
    if not is_mapping(raw):
        return {}
    balances = snake_keys(raw)
    if None not in balances.values():  # nearly always: no second copy to drop the nulls
        return balances
    return {k: v for k, v in balances.items() if v is not None}


def current_balance(raw: Any) -> Any:
    if is_mapping(raw):
        for name in ("current", "available", "usable"):
            value = number(raw.get(name))
            if value is not None:
                return value
    return number(raw)


def is_points(value: Mapping) -> bool:
    return (text(value.get("type")) or "").upper() == "POINTS"


def account_of(value: Mapping) -> dict:
    relationships = as_dict(value.get("relationships"))
    objective_of = relationships.get("OBJECTIVE_OF") or relationships.get("objectiveOf")
    start_date, expiry_date = account_dates(value)
    return drop_empty({
        "account_id": text(first(value, "accountId", "id")),
        "type": upper_text(value.get("type")),
        "client_type": text(value.get("clientType")),
        "status": upper_text(value.get("status")),
        "state": upper_text(value.get("state")),
        "event": upper_text(value.get("event")),
        "campaign_id": text(value.get("campaignId")),
        "balances": balances_of(value.get("balances")),
        "start_date": start_date,
        "expiry_date": expiry_date,
        "objective_of": snake_keys(objective_of) if objective_of else None,
    })


def account_dates(value: Mapping) -> tuple[Any, Any]:
    """(start date, expiry date) of an account, from one lookup of `dates`."""
    dates = value.get("dates")
    if isinstance(dates, dict):
        start, end = dates.get("start"), first(dates, "end", "expiry")
    else:  # a Mapping of another kind is read for the start date only, as dig() reads it
        start, end = dig(dates, "start"), None
    return iso_or_raw(start), iso_or_raw(end or value.get("expiryDate"))


def transaction_of(value: Mapping) -> dict:
    account = as_dict(value.get("account")) or {k: value.get(k) for k in (
        "accountId", "type", "clientType", "status", "campaignId", "balances")}
    return drop_empty({
        "transaction_id": text(first(value, "accountTransactionId", "transactionId", "id")),
        "event": upper_text(value.get("event")),
        "value": number(value.get("value")),
        "account": account_of(account),
        "balances_before": balances_of(value.get("balancesBefore")),
        "balances_after": balances_of(value.get("balancesAfter")),
    })


NOT_COUPONS = {"POINTS", "BEHAVIOURAL_ACTION", "TIER"}


def account_type(txn: Mapping) -> Any:
    """The account type of a transaction read by transaction_of (its account is a non-empty
    dict, or absent)."""
    account = txn.get("account")
    return account.get("type") if account else None


def is_coupon_txn(txn: Mapping, event: str) -> bool:
    """A coupon (re/un)redemption: any account transaction with that event, except on points
    and behavioural-action accounts (those are the trigger mechanism, not coupons)."""
    return txn.get("event") == event and account_type(txn) not in NOT_COUPONS


def coupon_of(txn: Mapping) -> dict:
    account = as_dict(txn.get("account"))
    return drop_empty({
        "account_id": account.get("account_id"),
        "campaign_id": account.get("campaign_id"),
        "type": account.get("type"),
        "client_type": account.get("client_type"),
        "value": txn.get("value"),
        "start_date": account.get("start_date"),
        "expiry_date": account.get("expiry_date"),
    })


def points_summary(points_txns: list[dict], *events: str) -> dict:
    """Points moved by `events` (all when none) among transactions on POINTS accounts: total,
    balances before the first and after the last of them (operation order: the last balance
    wins), and the first account id. One pass: a POS event asks up to three times."""
    values: list[Any] = []
    before = account_id = None
    after: dict = {}
    for txn in points_txns:
        if events and txn.get("event") not in events:
            continue
        value = txn.get("value")
        if isinstance(value, (int, float)):
            values.append(value)
        if before is None:
            before = txn.get("balances_before") or None
        after = txn.get("balances_after") or after
        if account_id is None:
            account_id = (txn.get("account") or {}).get("account_id") or None
    return drop_empty({
        "points": sum(values) if values else None,
        "balances_before": before,
        "balances_after": after,
        "account_id": account_id,
    })


def consumer_contacts(consumer: Mapping) -> list[dict]:
    data = parse_body(consumer.get("data"))
    data = data if isinstance(data, dict) else {}
    raw = first(data, "contact", "contacts", default=[])
    items: list[dict] = []
    if is_mapping(raw):
        raw = [{"type": k, "value": v} for k, v in raw.items()]
    for item in as_list(raw):
        if not is_mapping(item):
            continue
        kind = (text(item.get("type")) or "").lower()
        value = text(item.get("value"))
        if not value:
            continue
        if kind in ("mobile", "phone", "sms", "tel", "mobile_number"):
            kind = "phone"
        elif kind in ("email", "e_mail", "email_address"):
            kind = "email"
        items.append({"type": kind or "unknown", "value": value})
    personal = data.get("personal")
    personal = personal if is_mapping(personal) else {}
    for kind in ("email", "phone", "mobile"):
        value = text(data.get(kind)) or text(personal.get(kind))
        if value:
            items.append({"type": "phone" if kind == "mobile" else kind, "value": value})
    return items


def communication_optins(data: Mapping) -> Iterator[tuple[Mapping, Any]]:
    """(entry, its opt-in: a flag map or one flag) for each `communication[]` entry."""
    raw = first(data, "communication", "communications", "optin", default=[])
    for item in as_list(raw) if not is_mapping(raw) else [raw]:
        if is_mapping(item):
            yield item, item.get("optin", item)


def marketing_optin(data: Mapping) -> bool | None:
    found: bool | None = None
    for _item, optin in communication_optins(data):
        if is_mapping(optin):
            value = boolean(first(optin, "marketing", "MARKETING", "email", "sms"))
        else:
            value = boolean(optin)
        if value is not None:
            found = bool(found) or value
    return found


OPTIN_META = {"type", "channel", "name", "id", "value", "date", "updated", "updated_at",
              "date_updated", "last_updated", "source"}


def channel_optins(data: Mapping) -> dict[str, bool]:
    """Every opt-in flag of `communication[].optin` by name (`marketing`, `sms`, `email`, ...),
    so consent can be kept per channel (app/safety/consent.py). Entries may be flag maps
    (`{"optin": {"sms": true}}`) or one channel each (`{"type": "SMS", "optin": "Y"}`); when
    entries disagree the opt-out wins, the safe reading."""
    found: dict[str, bool] = {}
    for item, optin in communication_optins(data):
        if is_mapping(optin):
            pairs = [(snake_case(k), boolean(v)) for k, v in optin.items()]
        else:
            pairs = [(snake_case(first(item, "channel", "type", "name")) or "marketing",
                      boolean(optin))]
        for name, value in pairs:
            if name and name not in OPTIN_META and value is not None:
                found[name] = found.get(name, True) and value
    return found


def optin_attributes(consumer: Mapping) -> dict:
    """`marketing_optin` plus one `<channel>_optin` attribute per named opt-in flag."""
    out = {f"{name}_optin": value for name, value in (consumer.get("optins") or {}).items()
           if name != "marketing"}
    if "marketing_optin" in consumer:
        out["marketing_optin"] = consumer["marketing_optin"]
    return out


def consumer_of(value: Mapping, doc: AirDoc) -> dict:
    """The consumer entity's facts; its e-mails and phones are added to the document's ids."""
    data = parse_body(value.get("data"))
    data = data if isinstance(data, dict) else {}
    personal = as_dict(data.get("personal")) or data
    first_name = text(first(personal, "firstName", "first_name", "givenName", "forename"))
    last_name = text(first(personal, "lastName", "last_name", "familyName", "surname"))
    name = text(first(personal, "name", "fullName")) or (
        " ".join(p for p in (first_name, last_name) if p) or None)
    ids = doc.ids
    contacts = []
    for contact in doc.contacts(value):
        if contact["type"] == "email":
            cleaned = ids.add("email", contact["value"]) or None
        elif contact["type"] == "phone":
            cleaned = ids.add("phone", contact["value"]) or None
        else:
            cleaned = contact["value"]
        if cleaned:
            contacts.append({"type": contact["type"], "value": cleaned})
    return drop_empty({
        "consumer_id": text(first(value, "consumerId", "id")),
        "name": name,
        "first_name": first_name,
        "last_name": last_name,
        "birth_date": text(first(personal, "birthDate", "birth_date", "dob", "dateOfBirth")),
        "gender": text(personal.get("gender")),
        "language": text(first(personal, "language", "preferredLanguage", "locale"))
        or text(first(data, "language", "locale")),
        "friendly_name": text(value.get("friendlyName")),
        "contacts": contacts,
        "marketing_optin": marketing_optin(data),
        "optins": channel_optins(data),
    })


def consumer_attributes(consumer: Mapping) -> dict:
    return drop_empty({k: consumer.get(k) for k in (
        "name", "first_name", "last_name", "birth_date", "gender", "language")}) | (
        optin_attributes(consumer))


def tier_id(raw: Any) -> str | None:
    if is_mapping(raw):
        raw = first(raw, "tierId", "id")
    return text(raw)


def direction_of(before: str | None, after: str | None, hints: list[Any]) -> str:
    before_n, after_n = number(before), number(after)
    if before_n is not None and after_n is not None and before_n != after_n:
        return "up" if after_n > before_n else "down"
    for hint in hints:
        word = (text(hint) or "").upper()
        if not word:
            continue
        if "DOWN" in word or "DEMOT" in word:
            return "down"
        if "UPGRADE" in word or "PROMOT" in word or word in ("UP", "MOVE_UP", "UPWARD"):
            return "up"
    return "unknown"


def tier_facts(doc: AirDoc) -> dict:
    memberships = doc.of(TIER)
    membership = memberships[-1] if memberships else {}
    txn = doc.last(TIER_TXN)
    after = tier_id(first(txn, "tierIdAfter", "toTierId", "newTierId", "tierAfter"))
    before = tier_id(first(txn, "tierIdBefore", "fromTierId", "previousTierId", "tierBefore"))
    if before is None and txn:
        before = tier_id(txn.get("tierId"))
    if after is None:
        after = tier_id(membership.get("tierId"))
    if before is None:
        before = tier_id(first(membership, "previousTierId", "tierIdBefore"))
    if before is None and len(memberships) > 1:
        before = tier_id(memberships[0].get("tierId"))
    if before is None and after is None and txn:
        after = tier_id(txn.get("tierId"))
    balances_raw = as_dict(membership.get("balances")) or as_dict(txn.get("balances"))
    balances = {
        "points": number(balances_raw.get("points")),
        "spend": number(balances_raw.get("spend")),
        "transactions": number(balances_raw.get("transactions")),
    }
    transaction_type = text(first(txn, "transactionType", "type"))
    return {
        "tier_before": before,
        "tier_after": after,
        "direction": direction_of(before, after, [
            transaction_type, txn.get("direction"), membership.get("direction"),
            txn.get("event"), doc.event_name.rsplit(".", 1)[-1] if "MOVE" not in doc.event_name
            else None]),
        "balances": {k: v for k, v in balances.items() if v is not None},
        "expiry_date": iso_or_raw(first(membership, "expiryDate", "expiry_date")
                                  or dig(membership, "dates", "end")),
        "tier_membership_id": text(first(membership, "tierMembershipId", "membershipId", "id"))
        or text(txn.get("tierMembershipId")),
        "tier_name": text(first(membership, "tierName", "name")),
        "transaction_type": transaction_type,
        "value": number(first(txn, "value", "amount")),
    }


BASKET_LINE_FIELDS = {"upc", "sku", "itemUnitCost", "itemUnitCount", "totalUnitCostAfterDiscount",
                      "totalUnitCost", "description", "itemUnitMetric", "department"}


def basket_line(raw: Mapping) -> dict:
    # Fields without a value are left out as drop_empty would drop them (text() and number()
    # give None for those), set one by one: a basket has several lines, and building a dict
    # for drop_empty to copy cost a fifth of this function.
    line: dict[str, Any] = {}
    if (upc := text(raw.get("upc"))) is not None:
        line["upc"] = upc
    if (sku := text(first(raw, "sku", "productId", "itemId"))) is not None:
        line["sku"] = sku
    if (description := text(first(raw, "description", "name"))) is not None:
        line["description"] = description
    if (department := text(raw.get("department"))) is not None:
        line["department"] = department
    if (unit_cost := number(raw.get("itemUnitCost"))) is not None:
        line["unit_cost"] = unit_cost
    if (quantity := number(raw.get("itemUnitCount"))) is not None:
        line["quantity"] = quantity
    if (total := number(first(raw, "totalUnitCostAfterDiscount", "totalUnitCost"))) is not None:
        line["total"] = total
    if (unit_metric := text(raw.get("itemUnitMetric"))) is not None:
        line["unit_metric"] = unit_metric
    if "total" not in line and "unit_cost" in line:
        line["total"] = line["unit_cost"] * line.get("quantity", 1)
    if BASKET_LINE_FIELDS.issuperset(raw):  # usually: no other field to keep, one C-level pass
        return line
    for key, value in raw.items():
        if key not in BASKET_LINE_FIELDS and (value or value not in EMPTY) \
                and not isinstance(value, (dict, list)):
            line.setdefault(key_name(key), value)
    return line


def money_total(raw: Any) -> Any:
    if is_mapping(raw):
        values = [number(v) for v in raw.values()]
        values = [v for v in values if v is not None]
        return sum(values) if values else None
    return number(raw)


# The POS payload's points fields and the transaction events each one adds up.
POINTS_FIELDS = {"EARN": "points_earned", "CREDIT": "points_earned", "SPEND": "points_spent",
                 "DEBIT": "points_spent", "REFUND_DEBIT": "points_refunded",
                 "REFUND": "points_refunded", "LOCK": "points_locked", "VOID": "points_voided"}


def points_moved(points_txns: list[dict]) -> dict[str, Any]:
    """{POS points field: total of its events' values}, for the fields that have any: one pass
    over the transactions (each event counts towards one field, in transaction order)."""
    moved: dict[str, list] = {}
    for txn in points_txns:
        field = POINTS_FIELDS.get(txn.get("event"))
        value = txn.get("value")
        if field and isinstance(value, (int, float)):
            moved.setdefault(field, []).append(value)
    return {field: sum(values) for field, values in moved.items()}


def pos_facts(doc: AirDoc) -> dict:
    wallet_txn = doc.last(WALLET_TXN)
    request = doc.request_body if isinstance(doc.request_body, dict) else {}
    basket = parse_body(wallet_txn.get("basket"))
    if not isinstance(basket, dict) or not basket:  # POS Connect request body as a fallback
        basket = parse_body(first(request, "basket", default=None))
    basket = basket if isinstance(basket, dict) else {}
    lines = [basket_line(x) for x in as_list(basket.get("contents")) if is_mapping(x)]
    summary = as_dict(basket.get("summary"))
    basket_value = number(first(summary, "totalBasketValue", "totalBasketValueAfterDiscount",
                                "totalValue", "total"))
    if basket_value is None:
        basket_value = number(first(wallet_txn, "value", "totalValue"))
    if basket_value is None and lines:
        totals = [line.get("total") for line in lines if isinstance(line.get("total"),
                                                                     (int, float))]
        basket_value = sum(totals) if totals else None
    quantities = [line.get("quantity") for line in lines]
    items = sum([q for q in quantities if isinstance(q, (int, float))]) if lines else None
    txns = doc.transactions()
    points = points_moved(doc.points_transactions())

    location = as_dict(wallet_txn.get("location")) or as_dict(request.get("location"))
    return drop_empty({
        "wallet_id": doc.wallet_id,
        "transaction_id": text(first(wallet_txn, "walletTransactionId", "transactionId", "id")),
        "reference": text(wallet_txn.get("reference"))
        or text(dig(doc.request_body, "walletTransaction", "reference")),
        "transaction_type": upper_text(wallet_txn.get("type")),
        "status": upper_text(wallet_txn.get("status")),
        "store_id": text(first(location, "storeId", "incomingIdentifier")),
        "store_parent_id": text(first(location, "storeParentId", "parentIncomingIdentifier")),
        "phase": text(first(wallet_txn, "phase", "fulfilmentPhase")),
        "basket": lines,
        "totals": drop_empty({
            "basket_value": basket_value,
            "discount": money_total(first(summary, "totalDiscountAmount", "discount")),
            "items": items,
            "lines": len(lines) if lines else None,
        }),
        "currency": text(first(wallet_txn, "currency", "currencyCode")),
        "points_earned": points.get("points_earned"),
        "points_spent": points.get("points_spent"),
        "points_refunded": points.get("points_refunded"),
        "points_locked": points.get("points_locked"),
        "points_voided": points.get("points_voided"),
        "points_balance": doc.points_balance(),
        "coupons_redeemed": [coupon_of(t) for t in txns if is_coupon_txn(t, "REDEEM")],
        "coupons_unredeemed": [coupon_of(t) for t in txns if is_coupon_txn(t, "UNREDEEM")],
    })


# --- handlers: (doc) -> (type, payload, attributes) --------------------------------------------

Result = tuple[str, dict, dict]


def _points_attr(doc: AirDoc) -> dict:
    balance = doc.points_balance()
    return {"points_balance": balance} if balance is not None else {}


def wallet_created(doc: AirDoc) -> Result:
    wallet = doc.last(WALLET)
    payload = drop_empty({
        "wallet_id": doc.wallet_id,
        "wallet_type": upper_text(wallet.get("type")),
        "status": upper_text(wallet.get("status")),
        "identity_types": doc.identity_types,
    })
    return "loyalty.wallet.created", payload, {}


def programme_joined(doc: AirDoc) -> Result:
    occurred = utc_iso(doc.occurred_at)
    accounts = doc.accounts()
    tier = tier_facts(doc)
    consumer_raw = doc.last(CONSUMER)
    if not consumer_raw:
        for body in doc.bodies():
            if is_mapping(body.get("consumer")):
                consumer_raw = body["consumer"]
                break
    consumer = consumer_of(consumer_raw, doc) if consumer_raw else {}
    payload = drop_empty({
        "wallet_id": doc.wallet_id,
        "accounts": [{k: a[k] for k in ("account_id", "type", "client_type", "status",
                                        "balances", "campaign_id") if k in a}
                     for a in accounts],
        "tier": tier["tier_after"],
        "tier_membership_id": tier["tier_membership_id"],
        "consumer": consumer,
        "identity_types": doc.identity_types,
    })
    attributes = drop_empty({"member_since": occurred, "tier": tier["tier_after"]})
    attributes.update(_points_attr(doc))
    attributes.update(optin_attributes(consumer))
    return "loyalty.programme.joined", payload, attributes


def consumer_changed(kind: str) -> Callable[[AirDoc], Result]:
    def handler(doc: AirDoc) -> Result:
        consumer = consumer_of(doc.last(CONSUMER), doc)
        payload = drop_empty({"wallet_id": doc.wallet_id, "consumer": consumer})
        return f"loyalty.consumer.{kind}", payload, consumer_attributes(consumer)

    return handler


def account_created(doc: AirDoc) -> Result:
    accounts = doc.accounts()
    tier = tier_facts(doc)
    payload = drop_empty({"wallet_id": doc.wallet_id, "accounts": accounts,
                          "tier": tier["tier_after"]})
    attributes = drop_empty({"tier": tier["tier_after"]}) | _points_attr(doc)
    return "loyalty.account.created", payload, attributes


def campaign_accounts_created(doc: AirDoc) -> Result:
    accounts = doc.accounts()
    coupons = [a for a in accounts if "COUPON" in (a.get("type") or "")]
    payload = drop_empty({
        "wallet_id": doc.wallet_id,
        "accounts": accounts,
        "coupons": [drop_empty({k: a.get(k) for k in ("account_id", "campaign_id", "type",
                                                      "client_type", "expiry_date")})
                    for a in coupons],
    })
    kind = "loyalty.coupon.issued" if coupons else "loyalty.account.created"
    return kind, payload, {}


def _is_plan(account: Mapping) -> bool:
    return "SUBSCRIPTION" in (account.get("type") or "") or "PLAN" in (account.get("type") or "")


def plan_joined(doc: AirDoc) -> Result:
    accounts = doc.accounts()
    plans = [a for a in accounts if _is_plan(a)]
    plan = plans[0] if plans else (accounts[0] if accounts else {})
    payload = drop_empty({
        "wallet_id": doc.wallet_id,
        "plan": plan,
        "entitlements": [a for a in accounts if a is not plan],
    })
    attributes = drop_empty({"plan_id": plan.get("campaign_id"),
                             "plan_status": plan.get("status")})
    return "loyalty.plan.joined", payload, attributes


def account_updated(doc: AirDoc) -> Result:
    accounts = doc.accounts()
    txns = doc.transactions()
    cancelled_ids = {t["account"].get("account_id") for t in txns if t.get("event") == "CANCEL"}
    cancelled = [a for a in accounts if a.get("status") in ("CANCELLED", "CANCELED")
                 or a.get("event") == "CANCEL" or a.get("account_id") in cancelled_ids]
    payload = drop_empty({"wallet_id": doc.wallet_id, "accounts": accounts,
                          "cancelled": cancelled})
    if cancelled and (any(_is_plan(a) for a in cancelled) or not any(map(_is_plan, accounts))):
        plan = next((a for a in cancelled if _is_plan(a)), cancelled[0])
        attributes = drop_empty({"plan_id": plan.get("campaign_id"), "plan_status": "CANCELLED"})
        return "loyalty.plan.cancelled", payload, attributes
    payload["event_name"] = doc.event_name
    return "air.unmapped", payload, _points_attr(doc)


def programme_left(doc: AirDoc) -> Result:
    occurred = utc_iso(doc.occurred_at)
    accounts = doc.accounts()
    deleted = sorted({op.type for op in doc.ops if op.operation == "DELETE"})
    payload = drop_empty({
        "wallet_id": doc.wallet_id,
        "cancelled_accounts": [a.get("account_id") for a in accounts
                               if a.get("status") in ("CANCELLED", "CANCELED")],
        "deleted": deleted,
        "identity_types": doc.identity_types,
    })
    return "loyalty.programme.left", payload, {"programme_status": "left", "left_at": occurred}


def pos_transaction(kind: str) -> Callable[[AirDoc], Result]:
    def handler(doc: AirDoc) -> Result:
        payload = pos_facts(doc)
        totals = payload.get("totals", {})
        attributes: dict[str, Any] = {}
        if kind in ("settled", "fulfilled"):
            attributes = drop_empty({
                "total_spend": totals.get("basket_value"),
                "items_purchased": totals.get("items"),
                "points_earned": payload.get("points_earned"),
                "last_store_id": payload.get("store_id"),
                "last_purchase_at": utc_iso(doc.occurred_at),
            })
        elif kind == "refunded":
            attributes = drop_empty({"refund_total": totals.get("basket_value"),
                                     "points_refunded": payload.get("points_refunded")})
        if payload.get("points_balance") is not None:
            attributes["points_balance"] = payload["points_balance"]
        return f"pos.transaction.{kind}", payload, attributes

    return handler


def pos_spend(kind: str) -> Callable[[AirDoc], Result]:
    def handler(doc: AirDoc) -> Result:
        facts = pos_facts(doc)
        payload = {k: v for k, v in facts.items() if k not in ("basket",)}
        return f"pos.spend.{kind}", payload, _points_attr(doc)

    return handler


def action_fired(doc: AirDoc) -> Result:
    body = doc.request_body if isinstance(doc.request_body, dict) else {}
    wallet_txn = doc.last(WALLET_TXN)
    triggers = as_list(body.get("triggers")) or as_list(wallet_txn.get("triggers"))
    references = [text(t.get("reference")) for t in triggers
                  if is_mapping(t) and text(t.get("reference"))]
    accounts = doc.accounts()
    points = [t.get("value") for t in doc.points_transactions()
              if t.get("event") in ("CREDIT", "EARN") and isinstance(t.get("value"),
                                                                       (int, float))]
    coupons = [a for a in accounts if "COUPON" in (a.get("type") or "")]
    credited = sum(points) if points else None
    reward = "points" if credited else "coupon" if coupons else "none"
    payload = drop_empty({
        "wallet_id": doc.wallet_id,
        "action_references": references,
        "action_reference": references[0] if references else None,
        "reference": text(dig(body, "walletTransaction", "reference"))
        or text(wallet_txn.get("reference")),
        "wallet_transaction_id": text(wallet_txn.get("walletTransactionId")),
        "behavioural_actions": [a for a in accounts
                                if (a.get("type") or "") == "BEHAVIOURAL_ACTION"],
        "coupons_issued": coupons,
        "points_credited": credited,
        **{k: v for k, v in points_summary(doc.points_transactions(), "CREDIT", "EARN").items()
           if k in ("balances_before", "balances_after")},
        "reward": reward,
    })
    attributes = drop_empty({"last_reward_action": references[0] if references else None,
                             "last_reward_at": utc_iso(doc.occurred_at)})
    return "loyalty.action.fired", payload, attributes | _points_attr(doc)


def tier_changed(kind: str) -> Callable[[AirDoc], Result]:
    def handler(doc: AirDoc) -> Result:
        facts = tier_facts(doc)
        payload = {
            "tier_before": facts["tier_before"],
            "tier_after": facts["tier_after"],
            "direction": facts["direction"],
            "balances": facts["balances"],
            "expiry_date": facts["expiry_date"],
            "tier_membership_id": facts["tier_membership_id"],
            "transaction_type": facts["transaction_type"],
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        payload.update(drop_empty({"wallet_id": doc.wallet_id, "tier_name": facts["tier_name"],
                                   "value": facts["value"]}))
        attributes = drop_empty({
            "tier": facts["tier_after"],
            "tier_expiry": facts["expiry_date"],
            "tier_points_balance": facts["balances"].get("points"),
        })
        if kind in ("moved", "adjusted"):
            attributes.update(drop_empty({"tier_before": facts["tier_before"]}))
            attributes["tier_direction"] = facts["direction"]
        attributes.update(_points_attr(doc))
        return f"loyalty.tier.{kind}", payload, attributes

    return handler


def account_transaction(doc: AirDoc) -> Result:
    """WALLET.ACCOUNT.TRANSACTION.<EVENT>: coupons redeemed/unredeemed, points moves."""
    txns = doc.transactions()
    verb = doc.event_name.rsplit(".", 1)[-1]
    coupons = [t for t in txns if account_type(t) != "POINTS"]
    points = doc.points_transactions()
    redeemed = [coupon_of(t) for t in coupons if is_coupon_txn(t, "REDEEM")]
    payload = drop_empty({"wallet_id": doc.wallet_id, "transactions": txns})
    if verb == "REDEEM" or redeemed:
        payload["coupons"] = redeemed or [coupon_of(t) for t in coupons]
        return "loyalty.coupon.redeemed", payload, _points_attr(doc)
    if verb in COUPON_EVENT_TYPES and not points:
        payload["coupons"] = [coupon_of(t) for t in coupons]
        return COUPON_EVENT_TYPES[verb], payload, {}
    event = verb if verb in POINTS_EVENT_TYPES else next(
        (t.get("event") for t in points if t.get("event") in POINTS_EVENT_TYPES), None)
    if event:
        summary = points_summary(points)
        payload.update({k: v for k, v in summary.items() if k != "account_id"})
        payload["points_balance"] = doc.points_balance()
        payload = drop_empty(payload)
        return POINTS_EVENT_TYPES[event], payload, _points_attr(doc)
    payload["event_name"] = doc.event_name
    return "air.unmapped", payload, _points_attr(doc)


def unmapped(doc: AirDoc) -> Result:
    payload = drop_empty({
        "event_name": doc.event_name,
        "wallet_id": doc.wallet_id,
        "operations": [drop_empty({"object_type": op.type, "operation": op.operation})
                       for op in doc.ops],
        "request": drop_empty({"resource": text(doc.request.get("resource")),
                               "method": text(doc.request.get("method"))}),
        "response_code": number(doc.response.get("code")),
        "identity_types": doc.identity_types,
    })
    return "air.unmapped", payload, _points_attr(doc)


HANDLERS: dict[str, Callable[[AirDoc], Result]] = {
    "SERVICE.WALLET.CREATE": wallet_created,
    "SERVICE.WALLET.ACCOUNTS.CREATE": programme_joined,
    "WALLET.CONSUMER.CREATE": consumer_changed("created"),
    "WALLET.CONSUMER.UPDATE": consumer_changed("updated"),
    "WALLET.ACCOUNT.CREATE.SCHEME": account_created,
    "WALLET.ACCOUNT.CREATE.CAMPAIGN": campaign_accounts_created,
    "WALLET.ACCOUNT.CREATE.PLAN": plan_joined,
    "WALLET.ACCOUNT.UPDATE": account_updated,
    "SERVICE.WALLET.DELETE": programme_left,
    "POSCONNECT.WALLET.OPEN": pos_transaction("opened"),
    "POSCONNECT.WALLET.SETTLE": pos_transaction("settled"),
    "POSCONNECT.WALLET.FULFIL": pos_transaction("fulfilled"),
    "POSCONNECT.WALLET.FULFILL": pos_transaction("fulfilled"),
    "POSCONNECT.WALLET.REFUND": pos_transaction("refunded"),
    "POSCONNECT.WALLET.SPEND": pos_spend("locked"),
    "POSCONNECT.WALLET.SPEND.VOID": pos_spend("voided"),
    "SERVICE.TRIGGER": action_fired,
    "TIER.MEMBERSHIP.CREATE": tier_changed("created"),
    "TIER.MEMBERSHIP.CREDIT": tier_changed("credited"),
    "TIER.MEMBERSHIP.DEBIT": tier_changed("debited"),
    "TIER.MEMBERSHIP.MOVE": tier_changed("moved"),
    "TIER.MEMBERSHIP.ADJUST": tier_changed("adjusted"),
}


def handler_for(event_name: str) -> Callable[[AirDoc], Result]:
    if event_name in HANDLERS:
        return HANDLERS[event_name]
    if event_name.startswith("WALLET.ACCOUNT.TRANSACTION."):
        return account_transaction
    return unmapped


def _derived_redemptions(doc: AirDoc, main_type: str, trace: dict) -> list[dict]:
    """A coupon redeemed inside another event (e.g. at a POS settle) is also its own event."""
    if main_type == "loyalty.coupon.redeemed":
        return []
    envelopes = []
    for index, txn in enumerate(doc.transactions()):
        if not is_coupon_txn(txn, "REDEEM"):
            continue
        coupon = coupon_of(txn)
        envelopes.append(make_envelope(
            source=SOURCE,
            type="loyalty.coupon.redeemed",
            source_id=f"{doc.source_id}/redeem/{coupon.get('account_id') or index}",
            occurred_at=doc.occurred_at,
            identities=doc.ids.ids,
            attributes={},
            payload=drop_empty({"wallet_id": doc.wallet_id, "coupons": [coupon],
                                "within": main_type}),
            trace=trace,
        ))
    return envelopes


DERIVE_POINTS_FROM = ("pos.transaction.", "pos.spend.")


def _derived_points(doc: AirDoc, main_type: str, trace: dict) -> list[dict]:
    """Points moved inside a POS event are also their own `loyalty.points.<verb>` event (one per
    verb), with the balances before and after, so "points earned" has one shape everywhere."""
    if not main_type.startswith(DERIVE_POINTS_FROM):
        return []
    txns = doc.points_transactions()
    verbs: list[str] = []
    for txn in txns:
        event = txn.get("event")
        if event in POINTS_EVENT_TYPES and event not in verbs:
            verbs.append(event)
    envelopes = []
    balance = doc.points_balance()
    for verb in verbs:
        summary = points_summary(txns, verb)
        attributes = {"points_balance": balance} if balance is not None else {}
        envelopes.append(make_envelope(
            source=SOURCE,
            type=POINTS_EVENT_TYPES[verb],
            source_id=f"{doc.source_id}/points/{verb}",
            occurred_at=doc.occurred_at,
            identities=doc.ids.ids,
            attributes=attributes,
            payload=drop_empty({"wallet_id": doc.wallet_id, **summary,
                                "points_balance": balance, "within": main_type}),
            trace=trace,
        ))
    return envelopes


def normalize(value: Any, headers: Mapping[str, str], settings: Settings) -> list[dict]:
    if not is_mapping(value):
        raise Rejected("not_an_object", "AIR event must be a JSON object")
    doc = AirDoc(value, settings)
    kind, payload, attributes = handler_for(doc.event_name)(doc)
    extra = doc.extra()
    if extra:
        payload["extra"] = extra
    trace = doc.trace()
    envelope = make_envelope(
        source=SOURCE,
        type=kind,
        source_id=doc.source_id,
        occurred_at=doc.occurred_at,
        identities=doc.ids.ids,
        attributes=attributes,
        payload=payload,
        trace=trace,
    )
    return [envelope, *_derived_redemptions(doc, kind, trace),
            *_derived_points(doc, kind, trace)]
