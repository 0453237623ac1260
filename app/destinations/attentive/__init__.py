"""Attentive (SMS/e-mail): subscriptions, custom events and custom attributes. One user per call.

Actions and the params they read (strings `"$.a.b"` are envelope paths):

- ``subscribe``: ``sign_up_source_id`` (else config.extra["sign_up_source_id"]), optional
  ``channel`` (TEXT or EMAIL; default: every channel the person has a contact for). `perform`
  checks eligibility first (``GET /subscriptions``) and subscribes only channels not subscribed
  yet; with none left it skips ("already_subscribed"), because re-subscribing a TEXT subscriber
  texts them an "already subscribed" message.
- ``unsubscribe``: optional ``subscriptions`` [{type, channel}] (omitted = all).
- ``custom_event``: ``type`` (no ``" ' ( ) { } [ ] \\ | ,``), ``properties`` {name: spec};
  ``externalEventId`` = event id, ``occurredAt`` = occurred_at. Events older than 12 h are
  skipped ("older_than_12h") without a call: they would not trigger journeys any more.
- ``custom_attributes``: ``properties`` {name: spec} (flat).
- ``text``: ``template`` (text with ``{name}`` placeholders) and ``variables`` {name: spec};
  ``POST /text/send`` with ``{"user": {"phone"}, "text"}`` (the contract gives no body schema:
  unconfirmed). Texts only a phone whose TEXT subscription is active (eligibility check first,
  else "skipped" / "not_subscribed") and skips actions older than 12 h ("older_than_12h"). A
  missing variable is ItemInvalid naming the variable.

The user is ``{phone (E.164), email, externalIdentifiers.clientUserId = customer_id}``; a phone
that is not E.164 is ItemInvalid, and a phone or e-mail is required.
"""

from __future__ import annotations

import re
import string
import time
from collections.abc import Mapping, Sequence
from typing import Any

from app.destinations.base import (
    Action,
    Destination,
    HttpRequest,
    ItemInvalid,
    ItemResult,
    Reply,
    classify,
)
from app.destinations.mapping import resolve, resolve_present
from app.envelope import Rejected, parse_time

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
FORBIDDEN_TYPE_CHARS = set("\"'(){}[]\\|,")
MAX_EVENT_AGE_S = 12 * 3600


def _user(envelope: Mapping[str, Any], with_client_id: bool = True) -> dict[str, Any]:
    ids = envelope.get("identities") or {}
    user: dict[str, Any] = {}
    phone = ids.get("phone")
    if phone:
        if not E164.match(str(phone)):
            raise ItemInvalid("phone is not E.164")
        user["phone"] = str(phone)
    if ids.get("email"):
        user["email"] = str(ids["email"])
    if not user:
        raise ItemInvalid("no phone or e-mail for Attentive")
    if with_client_id and ids.get("customer_id"):
        user["externalIdentifiers"] = {"clientUserId": str(ids["customer_id"])}
    return user


def _properties(params: Mapping[str, Any], envelope: Mapping[str, Any]) -> dict[str, Any]:
    spec = params.get("properties") or {}
    if isinstance(spec, str):
        value = resolve(spec, envelope)
        return dict(value) if isinstance(value, Mapping) else {}
    if not isinstance(spec, Mapping):
        raise ItemInvalid("param 'properties' must be a mapping")
    return resolve_present(spec, envelope)


class _Single(Action):
    """One user per call; results are the whole reply's class."""

    max_batch = 1
    path = ""

    def request(self, items, config) -> HttpRequest:
        return HttpRequest("POST", self.path, json=items[0]["body"], limit=self.limit)


_CHANNEL_CONTACT = {"TEXT": "phone", "EMAIL": "email"}


class Subscribe(_Single):
    """Eligibility check, then subscribe only the channels not subscribed yet.

    ``GET /subscriptions`` answers one entry per (type, channel); ``isEligible: true`` is read as
    "this person can already be messaged on the channel", i.e. already subscribed (Attentive's
    meaning, and the sandbox's). Set ``eligible_means_subscribed = False`` for the opposite
    reading. Channels: TEXT for the phone, EMAIL for the e-mail, or only ``params.channel``.
    Already-subscribed channels are dropped from the POST (so a TEXT subscriber is never texted
    "already subscribed"); when none is left the item is "skipped" / "already_subscribed".
    """

    name = "subscribe"
    idempotent = True
    limit = "subscribe"
    path = "/subscriptions"
    eligible_means_subscribed = True

    def prepare(self, delivery, config):
        envelope, params = delivery["envelope"], delivery.get("params") or {}
        user = _user(envelope)
        source = resolve(params.get("sign_up_source_id"), envelope) or (
            getattr(config, "extra", {}) or {}).get("sign_up_source_id")
        if not source:
            raise ItemInvalid("no signUpSourceId (param sign_up_source_id or config)")
        channel = resolve(params.get("channel"), envelope)
        channels = [c for c, key in _CHANNEL_CONTACT.items() if key in user]
        if channel:
            channel = str(channel).upper()
            if channel not in _CHANNEL_CONTACT:
                raise ItemInvalid("channel must be TEXT or EMAIL")
            if channel not in channels:
                raise ItemInvalid(f"no contact for the {channel} channel")
            channels = [channel]
        contacts = {_CHANNEL_CONTACT[c]: user[_CHANNEL_CONTACT[c]] for c in channels}
        body: dict[str, Any] = {"user": contacts, "signUpSourceId": str(source)}
        if "externalIdentifiers" in user:
            body["externalIdentifiers"] = user["externalIdentifiers"]
        return {"body": body, "channels": channels}

    def eligibility_request(self, item) -> HttpRequest:
        return HttpRequest("GET", "/subscriptions", params=dict(item["body"]["user"]),
                           limit="default")

    def subscribed_channels(self, reply: Reply) -> set[str]:
        body = reply.body if isinstance(reply.body, Mapping) else {}
        out = set()
        for entry in body.get("subscriptionEligibilities") or []:
            if not isinstance(entry, Mapping):
                continue
            subscription = entry.get("subscription") or {}
            if subscription.get("type", "MARKETING") != "MARKETING":
                continue
            eligible = (entry.get("eligibility") or {}).get("isEligible")
            if isinstance(eligible, bool) and eligible == self.eligible_means_subscribed:
                out.add(str(subscription.get("channel", "")).upper())
        return out

    def interpret(self, reply, items):
        if not reply.ok:
            return [classify(reply)] * len(items)
        body = reply.body if isinstance(reply.body, Mapping) else {}
        statuses = {r.get("subscriptionCreationStatus")
                    for r in body.get("subscriptionResponses") or [] if isinstance(r, Mapping)}
        reason = "previously_created" if statuses == {"PREVIOUSLY_CREATED"} else ""
        return [ItemResult("delivered", reason, reply.status)] * len(items)

    async def perform(self, send, items, config) -> list[ItemResult]:
        results = []
        for item in items:
            check = await send(self.eligibility_request(item))
            if not check.ok and check.status != 404:  # 404: unknown person, nothing subscribed
                results.append(classify(check))
                continue
            done = self.subscribed_channels(check) if check.ok else set()
            wanted = [c for c in item["channels"] if c not in done]
            if not wanted:
                results.append(ItemResult("skipped", "already_subscribed", check.status))
                continue
            body = dict(item["body"])
            body["user"] = {_CHANNEL_CONTACT[c]: item["body"]["user"][_CHANNEL_CONTACT[c]]
                            for c in wanted}
            reply = await send(self.request([{**item, "body": body}], config))
            results.extend(self.interpret(reply, [item]))
        return results


class Unsubscribe(_Single):
    name = "unsubscribe"
    idempotent = True
    limit = "unsubscribe"
    path = "/subscriptions/unsubscribe"

    def prepare(self, delivery, config):
        envelope, params = delivery["envelope"], delivery.get("params") or {}
        user = _user(envelope, with_client_id=False)
        body: dict[str, Any] = {"user": user}
        subscriptions = params.get("subscriptions")
        if subscriptions:
            if not isinstance(subscriptions, list) or not all(
                    isinstance(s, Mapping) and s.get("type") and s.get("channel")
                    for s in subscriptions):
                raise ItemInvalid("subscriptions must be a list of {type, channel}")
            body["subscriptions"] = [dict(s) for s in subscriptions]
        return {"body": body}


def _occurred(envelope: Mapping[str, Any]) -> float:
    try:
        return parse_time(envelope.get("occurred_at")).timestamp()
    except Rejected:
        raise ItemInvalid("occurred_at missing or invalid") from None


class _Timely(_Single):
    """Items older than 12 hours are "skipped" / "older_than_12h" without a call."""

    clock = staticmethod(time.time)

    async def perform(self, send, items, config) -> list[ItemResult]:
        results = []
        for item in items:
            if self.clock() - item["occurred"] > MAX_EVENT_AGE_S:
                results.append(ItemResult("skipped", "older_than_12h"))
            else:
                results.append(await self.send_one(send, item, config))
        return results

    async def send_one(self, send, item, config) -> ItemResult:
        reply = await send(self.request([item], config))
        return self.interpret(reply, [item])[0]


class CustomEvent(_Timely):
    name = "custom_event"
    limit = "default"
    path = "/events/custom"

    def prepare(self, delivery, config):
        envelope, params = delivery["envelope"], delivery.get("params") or {}
        event_type = resolve(params.get("type"), envelope)
        if not event_type or not isinstance(event_type, str):
            raise ItemInvalid("custom event type missing")
        if FORBIDDEN_TYPE_CHARS & set(event_type):
            raise ItemInvalid("custom event type contains a forbidden character")
        occurred = _occurred(envelope)
        body = {"type": event_type, "user": _user(envelope),
                "properties": _properties(params, envelope),
                "externalEventId": envelope.get("event_id"),
                "occurredAt": envelope.get("occurred_at")}
        return {"body": body, "occurred": occurred}


class Text(_Timely):
    """A text message from a template, to a TEXT subscriber only. Messages a person: never
    idempotent, so a crash mid-send goes to the operator, not out again."""

    name = "text"
    limit = "default"
    path = "/text/send"
    checker = Subscribe()
    MAX_CHARS = 1600

    def prepare(self, delivery, config):
        envelope, params = delivery["envelope"], delivery.get("params") or {}
        template = params.get("template")
        if not isinstance(template, str) or not template.strip():
            raise ItemInvalid("text template missing")
        user = _user(envelope, with_client_id=False)
        if "phone" not in user:
            raise ItemInvalid("no phone for a text message")
        variables = _properties({"properties": params.get("variables") or {}}, envelope)
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        except ValueError:
            raise ItemInvalid("text template is malformed") from None
        for name in sorted(names):
            if name not in variables:
                raise ItemInvalid(f"template variable {name!r} missing")
        text = template.format_map(variables)
        if len(text) > self.MAX_CHARS:
            raise ItemInvalid(f"text longer than {self.MAX_CHARS} characters")
        return {"body": {"user": {"phone": user["phone"]}, "text": text},
                "occurred": _occurred(envelope)}

    async def send_one(self, send, item, config) -> ItemResult:
        check = await send(HttpRequest("GET", "/subscriptions", params=item["body"]["user"],
                                       limit="default"))
        if not check.ok and check.status != 404:
            return classify(check)
        if "TEXT" not in (self.checker.subscribed_channels(check) if check.ok else set()):
            return ItemResult("skipped", "not_subscribed", check.status)
        return await super().send_one(send, item, config)


class CustomAttributes(_Single):
    name = "custom_attributes"
    idempotent = True
    limit = "default"
    path = "/attributes/custom"

    def prepare(self, delivery, config):
        envelope, params = delivery["envelope"], delivery.get("params") or {}
        properties = _properties(params, envelope)
        if not properties:
            raise ItemInvalid("no attribute values to set")
        if any(isinstance(v, (Mapping, list)) for v in properties.values()):
            raise ItemInvalid("custom attributes must be flat values")
        return {"body": {"user": _user(envelope), "properties": properties}}


def auth_headers(config) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.token}"}


ACTIONS: Sequence[Action] = (Subscribe(), Unsubscribe(), CustomEvent(), CustomAttributes(), Text())

DESTINATION = Destination(
    name="attentive",
    actions={a.name: a for a in ACTIONS},
    limits={"default": 150.0, "subscribe": 10.0, "unsubscribe": 5.0},
    auth_headers=auth_headers,
    overall="default",  # 150 calls/s per token, subscribes and unsubscribes included
)
