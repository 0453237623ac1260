"""Per-channel marketing consent: how it is stored, merged, read from events, and checked.

Precedence (the issue's rule): the latest change wins, except that an *explicit* opt-out (the
person said so: an unsubscribe, an opt-out flag, a LINE block) is never overridden by a later
*inferred* opt-in (the relay concluded it: LINE reachable again after a send, Attentive already
has them subscribed), only by a later explicit opt-in. Ties at the same second: "out" wins (the
safe side), then the explicit change, then the source name (so every replica agrees).

Storage. Changes arrive out of order (AIR, Attentive, Insider and LINE each have their own
clock), and profiles merge, so a channel keeps two last-writer-wins registers, the latest explicit
and the latest inferred change, each ``[state, ts, source]`` (state "in"/"out", ts epoch
seconds)::

    {"sms": {"explicit": ["out", 1795168800, "annex"], "inferred": ["in", 1795169000, "maac"]}}

The effective consent is the later of the two, except an explicit "out" beats an inferred "in"
whatever their order: exactly what applying the changes one by one in time order gives, but
independent of arrival order. One record per channel could not be: an explicit "in" arriving
late would not know whether an inferred "out" came after it. `merge` is therefore a per-register
maximum: commutative, associative, idempotent, and equal to applying every change in any order
(tests/unit/test_safety_consent.py). `effective` gives the flat ``[state, ts, source, explicit]``
view; a stored entry in that flat form is read as one change.

Signals (`signals(envelope)`, `outcome_signals(...)`), per source:

- AIR consumer records (`loyalty.consumer.created/updated`, `loyalty.programme.joined`):
  `payload.consumer.optins` (from `communication[].optin`): `sms`, `email`, `line`, `push`
  flags, explicit both ways (AIR holds the person's stated preferences). The umbrella
  `marketing: false` means no marketing anywhere: every channel "out", named ones included;
  `marketing: true` alone names no channel and changes nothing.
- `identity.updated` (any CRM, Insider included): `payload.consents` and attributes such as
  `email_optin`, `sms_optin`, `whatsapp_optin`, `line_opt_in`, `sms_unsubscribed` (negated),
  explicit; `gdpr_optin` / `marketing_optin` false is the umbrella opt-out. Source: the CRM name.
- Annex `membership.subscribed` / `membership.unsubscribed`: explicit, on the channel the
  record names (`channel`, or `sms_opt_in`-style action types); otherwise a subscription covers
  the contacts it carries (phone -> sms, e-mail -> email) and an unsubscription both, since
  Attentive's unsubscribe without a list ends every subscription.
- LINE (`maac`): `line.bound` is an explicit "in" (linking LINE to the membership is the
  person's own act and makes them a friend of the account); `line.sent`, `line.opened` and a
  customer's `line.clicked` are inferred "in" (reachable); `line.unreachable` because LINE says
  the user blocked the account (or is not a friend) is an explicit "out". "No LINE uid" or a
  malformed uid is about the relay's data, not the person: no change.
- Attentive answers (`outcome_signals`, from the sink's outcome of a delivery): a subscribe that
  went through is an explicit "in" on its channels, "already_subscribed" an inferred one; an
  unsubscribe is an explicit "out"; a text skipped as "not_subscribed" an inferred sms "out"; a
  text sent an inferred "in". MAAC outcomes mirror `line.sent` / `line.unreachable`.

Known limit: AIR and CRM records repeat their whole state, so a stale "in" re-sent after an
opt-out recorded elsewhere is a later explicit change and wins. Upstreams that can should send
consent changes, not snapshots.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from app.envelope import parse_time
from app.normalize.common import boolean, snake_case

STATES = ("in", "out")
SLOTS = ("explicit", "inferred")
# Channels consent is kept for: the message channels (app.safety.CHANNELS) but "braze", whose
# consent is that of e-mail or push, plus WhatsApp, which Insider reports.
CONSENT_CHANNELS = ("sms", "line", "email", "push", "whatsapp")
BRAZE_CHANNELS = ("email", "push", "braze")
CHANNEL_ALIASES = {
    "sms": "sms", "text": "sms", "texts": "sms", "sms_marketing": "sms", "mobile": "sms",
    "email": "email", "e_mail": "email", "mail": "email", "email_marketing": "email",
    "line": "line", "push": "push", "app_push": "push", "mobile_push": "push",
    "web_push": "push", "whatsapp": "whatsapp", "braze": "braze",
}
UMBRELLAS = {"marketing", "gdpr", "all", "global", "general"}
IN_WORDS = {"in", "opted_in", "granted", "given", "active", "allow", "allowed", "subscribe",
            "consented"}
OUT_WORDS = {"out", "opted_out", "denied", "revoked", "withdrawn", "inactive", "deny",
             "unsubscribe", "blocked"}
ATTRIBUTE = re.compile(r"^(?P<channel>[a-z_]+?)_(?P<word>opt_?in|consent|subscribed|subscription"
                       r"|opt_?out|unsubscribed)$")
NEGATIVE_WORDS = {"optout", "opt_out", "unsubscribed"}
CONSUMER_TYPES = {"loyalty.consumer.created", "loyalty.consumer.updated", "loyalty.programme.joined"}
LINE_IN = {"line.bound": True, "line.sent": False, "line.opened": False, "line.clicked": False}
BLOCKED = re.compile(r"block|not a friend|unfollow", re.IGNORECASE)
SOURCE_MAX = 32

Consent = dict[str, Any]


class Signal(NamedTuple):
    channel: str
    state: str
    ts: int
    source: str
    explicit: bool


def _key(record: list) -> tuple:
    """Order within one register: later, then "out" (safe), then the source (deterministic)."""
    return (record[1], record[0] == "out", str(record[2]))


def _record(raw: Any) -> list | None:
    if (isinstance(raw, (list, tuple)) and len(raw) >= 3 and raw[0] in STATES
            and isinstance(raw[1], (int, float)) and not isinstance(raw[1], bool)):
        return [raw[0], raw[1], str(raw[2])]
    return None


def _registers(entry: Any) -> dict[str, list]:
    """A stored channel entry as {"explicit": record, "inferred": record} (either may be absent).
    The flat form [state, ts, source, explicit] is one change; anything unreadable is none."""
    out: dict[str, list] = {}
    if isinstance(entry, Mapping):
        for slot in SLOTS:
            record = _record(entry.get(slot))
            if record:
                out[slot] = record
    elif isinstance(entry, (list, tuple)) and len(entry) >= 4:
        record = _record(entry)
        if record:
            out[SLOTS[0] if entry[3] else SLOTS[1]] = record
    return out


def _later(a: list | None, b: list | None) -> list | None:
    if a is None or b is None:
        return a if b is None else b
    return a if _key(a) >= _key(b) else b


def apply(consent: Consent, channel: str, state: str, ts: float, source: str,
          explicit: bool) -> bool:
    """Record one change in place; True when the stored consent changed.

    Raises ValueError for a state other than "in"/"out" (a caller's bug, not input)."""
    if state not in STATES:
        raise ValueError(f"consent state must be 'in' or 'out', got {state!r}")
    registers = _registers(consent.get(channel))
    slot = SLOTS[0] if explicit else SLOTS[1]
    new = [state, ts, str(source)[:SOURCE_MAX]]
    winner = _later(registers.get(slot), new)
    registers[slot] = winner
    if consent.get(channel) == registers:
        return False
    consent[channel] = registers
    return True


def merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> Consent:
    """The consent of two profiles merged: per channel and register, the later change."""
    out: Consent = {}
    for channel in sorted(set(a) | set(b)):
        ra, rb = _registers(a.get(channel)), _registers(b.get(channel))
        merged = {slot: _later(ra.get(slot), rb.get(slot)) for slot in SLOTS}
        merged = {slot: record for slot, record in merged.items() if record is not None}
        if merged:
            out[channel] = merged
    return out


def effective(consent: Mapping[str, Any], channel: str) -> list | None:
    """The consent in force on a channel, [state, ts, source, explicit], or None if unknown."""
    registers = _registers(consent.get(channel)) if isinstance(consent, Mapping) else {}
    x, i = registers.get("explicit"), registers.get("inferred")
    if x is None and i is None:
        return None
    if x is not None and (i is None or (x[0] == "out" and i[0] == "in")
                          or (x[1], x[0] == "out", True) >= (i[1], i[0] == "out", False)):
        return [*x, True]
    return [*i, False]


def allows(consent: Mapping[str, Any], channel: str, purpose: str) -> tuple[bool, str]:
    """(allowed, reason): "transactional" / "consented" when allowed, else "opted_out" or
    "no_consent". Transactional messages need no consent (they are what the person asked for).
    A Braze message is allowed when e-mail, push or Braze itself is consented: Braze picks the
    channel and applies its own per-channel subscription states."""
    if purpose == "transactional":
        return True, "transactional"
    states = [record[0] for record in (effective(consent, c) for c in (
        BRAZE_CHANNELS if channel == "braze" else (channel,))) if record]
    if "in" in states:
        return True, "consented"
    if "out" in states:
        return False, "opted_out"
    return False, "no_consent"


# ---- signals ---------------------------------------------------------------------------------


def flag(value: Any) -> bool | None:
    """A consent flag from a messy value: True/False, "Y", "false", 0, "opted_out", ..."""
    found = boolean(value)
    if found is not None or not isinstance(value, str):
        return found
    word = snake_case(value)
    return True if word in IN_WORDS else False if word in OUT_WORDS else None


def channel_of(raw: Any) -> str | None:
    return CHANNEL_ALIASES.get(snake_case(raw)) if isinstance(raw, str) else None


def _flags(named: Iterable[tuple[str, bool]], ts: int, source: str) -> list[Signal]:
    """Channel flags of one record -> signals; an umbrella "false" turns every channel out."""
    channels: dict[str, bool] = {}
    umbrella_out = False
    for name, value in named:
        if name in UMBRELLAS:
            umbrella_out = umbrella_out or value is False
        elif (channel := channel_of(name)) and value is not None:
            channels[channel] = channels.get(channel, True) and value
    if umbrella_out:
        channels = {channel: False for channel in CONSENT_CHANNELS}
    return [Signal(c, "in" if v else "out", ts, source, True) for c, v in sorted(channels.items())]


def _attribute_flags(attributes: Mapping[str, Any]) -> list[tuple[str, bool]]:
    out = []
    for name, value in attributes.items():
        match = ATTRIBUTE.match(snake_case(name)) if isinstance(name, str) else None
        state = flag(value)
        if not match or state is None:
            continue
        negative = match.group("word") in NEGATIVE_WORDS
        out.append((match.group("channel"), state != negative))
    return out


def _source(raw: Any, default: str) -> str:
    name = snake_case(raw)[:SOURCE_MAX] if isinstance(raw, str) else ""
    return name if name and name != "unknown" else default


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _air(envelope: Mapping[str, Any], ts: int) -> list[Signal]:
    payload, attributes = _mapping(envelope.get("payload")), _mapping(envelope.get("attributes"))
    optins = _mapping(_mapping(payload.get("consumer")).get("optins"))
    named = [(snake_case(k), flag(v)) for k, v in optins.items()]
    if not named and "marketing_optin" in attributes:
        named = [("marketing", flag(attributes["marketing_optin"]))]
    return _flags(named, ts, "air")


def _identity(envelope: Mapping[str, Any], ts: int) -> list[Signal]:
    payload, attributes = _mapping(envelope.get("payload")), _mapping(envelope.get("attributes"))
    source = _source(payload.get("source"), "identity.updates")
    named = [(snake_case(k), flag(v)) for k, v in _mapping(payload.get("consents")).items()]
    given = {channel_of(name) or name for name, _ in named}
    named += [(name, value) for name, value in _attribute_flags(attributes)
              if (channel_of(name) or name) not in given]
    return _flags(named, ts, source)


def _annex(envelope: Mapping[str, Any], ts: int) -> list[Signal]:
    subscribed = envelope.get("type") == "membership.subscribed"
    payload = _mapping(envelope.get("payload"))
    action = snake_case(payload.get("action_type"))
    channel = channel_of(payload.get("channel")) or channel_of(action.split("_", 1)[0])
    if channel:
        channels = [channel]
    elif subscribed:
        ids = _mapping(envelope.get("identities"))
        channels = [c for c, kind in (("email", "email"), ("sms", "phone")) if ids.get(kind)]
    else:
        channels = ["email", "sms"]
    state = "in" if subscribed else "out"
    return [Signal(c, state, ts, "annex", True) for c in channels]


def _line(envelope: Mapping[str, Any], ts: int) -> list[Signal]:
    kind = envelope.get("type")
    if kind in LINE_IN:
        if kind == "line.clicked" and not _mapping(envelope.get("identities")):
            return []
        return [Signal("line", "in", ts, "maac", LINE_IN[kind])]
    reason = _mapping(envelope.get("payload")).get("reason")
    if kind == "line.unreachable" and isinstance(reason, str) and BLOCKED.search(reason):
        return [Signal("line", "out", ts, "maac", True)]
    return []


def _ts(envelope: Mapping[str, Any]) -> int | None:
    try:
        return int(parse_time(envelope.get("occurred_at")).timestamp())
    except (ValueError, TypeError, OverflowError, OSError):
        return None


def signals(envelope: Any) -> list[Signal]:
    """The consent changes a normalized envelope carries (see the module docstring); never
    raises: a record the relay can't read changes no consent and must not stop the stream."""
    try:
        if not isinstance(envelope, Mapping):
            return []
        read = _reader(envelope.get("type"), envelope.get("source"))
        if read is None:  # most events say nothing about consent: no time to parse
            return []
        ts = _ts(envelope)
        return [] if ts is None else read(envelope, ts)
    except Exception:  # tolerant by contract: input it cannot read is no signal
        return []


def _reader(kind: Any, source: Any):
    """The function that reads the consent signals of envelopes of this type, if any."""
    if kind == "identity.updated":
        return _identity
    if source == "air" and kind in CONSUMER_TYPES:
        return _air
    if source == "annex" and kind in ("membership.subscribed", "membership.unsubscribed"):
        return _annex
    if isinstance(kind, str) and kind.startswith("line."):
        return _line
    return None


ATTENTIVE_CHANNELS = {"TEXT": "sms", "EMAIL": "email"}


def outcome_signals(delivery: Mapping[str, Any], status: str, reason: str,
                    ts: float) -> list[Signal]:
    """Consent learnt from a destination's answer to one delivery (see the module docstring).
    `status`/`reason` are the sink's ItemResult fields; never raises."""
    try:
        dest, action = delivery.get("destination"), delivery.get("action")
        if dest != "maac" and dest != "attentive":  # the only ones that answer about consent
            return []
        params = _mapping(delivery.get("params"))
        ids = _mapping(_mapping(delivery.get("envelope")).get("identities"))
        when = int(ts)
        if dest == "maac" and action in ("push", "multicast"):
            if status == "delivered":
                return [Signal("line", "in", when, "maac", False)]
            if status == "unreachable" and BLOCKED.search(reason or ""):
                return [Signal("line", "out", when, "maac", True)]
            return []
        if dest != "attentive":
            return []
        if action == "subscribe" and (status == "delivered" or reason == "already_subscribed"):
            named = ATTENTIVE_CHANNELS.get(str(params.get("channel") or "").upper())
            channels = [named] if named else [
                c for c, kind in (("email", "email"), ("sms", "phone")) if ids.get(kind)]
            return [Signal(c, "in", when, "attentive", status == "delivered") for c in channels]
        if action == "unsubscribe" and status == "delivered":
            listed = [ATTENTIVE_CHANNELS.get(str(_mapping(s).get("channel")).upper())
                      for s in params.get("subscriptions") or [] if isinstance(s, Mapping)]
            channels = sorted({c for c in listed if c}) or ["email", "sms"]
            return [Signal(c, "out", when, "attentive", True) for c in channels]
        if action == "text" and status == "delivered":
            return [Signal("sms", "in", when, "attentive", False)]
        if action == "text" and reason == "not_subscribed":
            return [Signal("sms", "out", when, "attentive", False)]
    except Exception:  # tolerant by contract: an answer it cannot read is no signal
        return []
    return []
