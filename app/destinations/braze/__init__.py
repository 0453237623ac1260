"""Braze: user tracking (`/users/track`) and API-triggered campaigns and canvases.

Actions and the params they read (strings `"$.a.b"` are envelope paths):

- ``track_attributes``: ``attributes`` {name: spec}; optional ``update_existing_only``.
- ``track_event``: ``name``; optional ``properties`` {name: spec}. ``time`` = occurred_at and
  ``properties.event_id`` = the envelope's event id.
- ``track_purchase``: ``currency``; optional ``lines_path`` (default ``$.payload.basket``),
  ``product_id_field`` / ``price_field`` / ``quantity_field`` (defaults try
  ``product_id|upc|sku``, ``price|unit_price|unit_cost|itemUnitCost`` and
  ``quantity|itemUnitCount|qty``), ``price_divisor`` (e.g. 100 for amounts in minor units),
  ``properties``.
- ``campaign_trigger`` / ``canvas_trigger``: ``campaign_id`` / ``canvas_id``; optional
  ``properties`` {name: spec} (trigger_properties / canvas_entry_properties), ``attributes``,
  ``send_to_existing_only``, ``broadcast`` (bool or path; the payload flag ``payload.broadcast``
  also counts), ``with_wallet`` (read the live SessionM offer wallet first and add
  ``wallet_offers``, ``wallet_offer_count``, ``wallet_available_points``, ``wallet_total_points``
  and ``wallet_status`` to the properties; see `app.destinations.braze.wallet`),
  ``wallet_fallback`` (``send``: send with ``wallet_status: "unavailable"``, or ``retry``: hold
  the item; default ``WALLET_FALLBACK``), ``wallet_max_offers`` (default 10). The wallet is read
  for SessionM user id = identities.sessionm_user_id, else customer_id; broadcasts get none.

The user is named by ``external_id`` = identities.braze_external_id or customer_id; without one,
by ``email``, then ``phone`` (tracking only: trigger recipients need an external id).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from app.destinations.base import (
    Action,
    Destination,
    HttpRequest,
    ItemInvalid,
    ItemResult,
    Reply,
    classify,
    short,
)
from app.destinations.braze import wallet as wallets
from app.destinations.mapping import get_path, resolve, resolve_present

MAX_OBJECTS = 75  # objects per array in one /users/track request
ARRAY_ORDER = {"attributes": 0, "events": 1, "purchases": 2}
MAX_RECIPIENTS = 50  # recipients per trigger send
MAX_PURCHASE_QUANTITY = 100
MAX_CANVAS_ENTRY_BYTES = 50 * 1024


def _identify(envelope: Mapping[str, Any], allow_contact: bool = True) -> dict[str, Any]:
    ids = envelope.get("identities") or {}
    external = ids.get("braze_external_id") or ids.get("customer_id")
    if external:
        return {"external_id": str(external)}
    if allow_contact:
        if ids.get("email"):
            return {"email": ids["email"]}
        if ids.get("phone"):
            return {"phone": ids["phone"]}
    raise ItemInvalid("no Braze user identifier (external id, email or phone)")


def _mapping(params: Mapping[str, Any], key: str, envelope: Mapping[str, Any]) -> dict[str, Any]:
    spec = params.get(key)
    if spec is None:
        return {}
    if isinstance(spec, str):  # a path to a whole object
        value = resolve(spec, envelope)
        return dict(value) if isinstance(value, Mapping) else {}
    if not isinstance(spec, Mapping):
        raise ItemInvalid(f"param {key!r} must be a mapping")
    return resolve_present(spec, envelope)


class _Track(Action):
    """Base for the `/users/track` actions, which share their requests (`shares`).

    An item is ``{"array": "attributes" | "events" | "purchases", "objects": [...]}``: the
    objects it contributes to that array. One request carries all three arrays, at most 75
    objects in each (`pack_requests`), so attributes, events and purchases of a batch travel together
    rather than in three requests; each `perform` call is one request (it still packs
    defensively, never splitting an item, when called directly with a larger batch).
    Partial failures (``errors[].input_array`` and ``index``) map back to the item owning the
    object; an error naming no array fails that index in every array of the request (a
    rejection is never taken for a success).
    """

    array = ""
    max_batch = MAX_OBJECTS
    max_weight = MAX_OBJECTS  # array slots per request
    limit = "track"
    shares = "users/track"

    @staticmethod
    def weight(item: Mapping[str, Any]) -> int:
        """Array slots the item takes (a purchase delivery may take several)."""
        return len(item["objects"])

    def _array(self, item: Mapping[str, Any]) -> str:
        return item.get("array") or self.array

    def pack_requests(self, pairs):
        """Each chunk in the order Braze reads the arrays (attributes, events, purchases), so
        a customer's attributes are set before their event in the same request is handled,
        and the deliveries are listed in the order of the request's objects."""
        return [sorted(chunk, key=lambda pair: ARRAY_ORDER.get(self._array(pair[1]), 3))
                for chunk in self._pack(pairs, lambda pair: pair[1])]

    def _pack(self, entries: Sequence[Any], item_of) -> list[list[Any]]:
        """Consecutive chunks with at most 75 objects in each array."""
        chunks: list[list[Any]] = []
        chunk: list[Any] = []
        used: dict[str, int] = {}
        for entry in entries:
            item = item_of(entry)
            array, n = self._array(item), self.weight(item)
            if chunk and used.get(array, 0) + n > MAX_OBJECTS:
                chunks.append(chunk)
                chunk, used = [], {}
            chunk.append(entry)
            used[array] = used.get(array, 0) + n
        if chunk:
            chunks.append(chunk)
        return chunks

    def request(self, items: Sequence[Any], config: Any) -> HttpRequest:
        arrays: dict[str, list] = {}
        for item in items:
            arrays.setdefault(self._array(item), []).extend(item["objects"])
        if any(len(objects) > MAX_OBJECTS for objects in arrays.values()):
            raise ValueError("more than 75 objects in one /users/track array")
        return HttpRequest("POST", "/users/track", json=arrays, limit=self.limit)

    def interpret(self, reply: Reply, items: Sequence[Any]) -> list[ItemResult]:
        if not reply.ok:
            return [classify(reply)] * len(items)
        body = reply.body if isinstance(reply.body, Mapping) else {}
        failed: dict[tuple[str | None, int], str] = {}
        for error in body.get("errors") or []:
            if not isinstance(error, Mapping):
                continue
            index = error.get("index")
            if isinstance(index, int):
                failed[(error.get("input_array"), index)] = str(error.get("type") or "rejected")
        results, offsets = [], {}
        for item in items:
            array, count = self._array(item), len(item["objects"])
            start = offsets.get(array, 0)
            offsets[array] = start + count
            bad = [failed.get((array, i)) or failed[(None, i)]
                   for i in range(start, start + count)
                   if (array, i) in failed or (None, i) in failed]
            if bad:
                results.append(ItemResult("failed", f"braze_error: {bad[0]}"[:200],
                                          reply.status, detail=short(bad)))
            else:
                results.append(ItemResult("delivered", "", reply.status))
        return results

    async def perform(self, send, items, config) -> list[ItemResult]:
        results: list[ItemResult] = []
        for chunk in self._pack(items, lambda item: item):
            reply = await send(self.request(chunk, config))
            results.extend(self.interpret(reply, chunk))
        return results


class TrackAttributes(_Track):
    name = "track_attributes"
    idempotent = True
    array = "attributes"

    def prepare(self, delivery, config):
        envelope, params = delivery["envelope"], delivery.get("params") or {}
        attributes = _mapping(params, "attributes", envelope)
        if not attributes:
            raise ItemInvalid("no attribute values to set")
        obj = {**_identify(envelope), **attributes}
        if params.get("update_existing_only"):
            obj["_update_existing_only"] = True
        return {"array": self.array, "objects": [obj]}


class TrackEvent(_Track):
    name = "track_event"
    array = "events"

    def prepare(self, delivery, config):
        envelope, params = delivery["envelope"], delivery.get("params") or {}
        name = resolve(params.get("name"), envelope)
        if not name or not isinstance(name, str):
            raise ItemInvalid("event name missing")
        properties = _mapping(params, "properties", envelope)
        properties["event_id"] = envelope.get("event_id")
        obj = {**_identify(envelope), "name": name, "time": envelope.get("occurred_at"),
               "properties": properties}
        return {"array": self.array, "objects": [obj]}


_PRODUCT_FIELDS = ("product_id", "upc", "sku")
_PRICE_FIELDS = ("price", "unit_price", "unit_cost", "itemUnitCost")
_QUANTITY_FIELDS = ("quantity", "itemUnitCount", "qty")


def _field(line: Mapping[str, Any], configured: Any, defaults: tuple[str, ...]) -> Any:
    for name in ([configured] if configured else defaults):
        value = get_path(line, str(name))
        if value not in (None, ""):
            return value
    return None


class TrackPurchase(_Track):
    """One purchase object per basket line; a quantity above 100 is split into several objects.

    A delivery whose basket needs more than 75 objects can't fit one request and is rejected
    (ItemInvalid) rather than split across requests, where a partial retry would double-count.
    """

    name = "track_purchase"
    array = "purchases"

    def prepare(self, delivery, config):
        envelope, params = delivery["envelope"], delivery.get("params") or {}
        user = _identify(envelope)
        currency = resolve(params.get("currency"), envelope)
        if not currency or not isinstance(currency, str) or len(currency) != 3:
            raise ItemInvalid("purchase currency missing or not an ISO-4217 code")
        lines = resolve(params.get("lines_path") or "$.payload.basket", envelope)
        if isinstance(lines, Mapping):  # AIR's basket {contents: [...]}
            lines = lines.get("contents") or lines.get("lines")
        if not isinstance(lines, list) or not lines:
            raise ItemInvalid("no basket lines")
        divisor = float(params.get("price_divisor") or 1)
        extra = _mapping(params, "properties", envelope)
        objects = []
        for position, line in enumerate(lines):
            if not isinstance(line, Mapping):
                raise ItemInvalid(f"basket line {position} is not an object")
            product = _field(line, params.get("product_id_field"), _PRODUCT_FIELDS)
            price = _field(line, params.get("price_field"), _PRICE_FIELDS)
            quantity = _field(line, params.get("quantity_field"), _QUANTITY_FIELDS)
            if product is None or price is None:
                raise ItemInvalid(f"basket line {position} lacks product id or price")
            try:
                price_value = round(float(price) / divisor, 4)
                quantity_value = int(quantity) if quantity is not None else 1
            except (TypeError, ValueError):
                raise ItemInvalid(
                    f"basket line {position} has a non-numeric price or quantity") from None
            if quantity_value < 1:
                continue
            properties = {**extra, "event_id": envelope.get("event_id"), "line": position}
            while quantity_value > 0:
                part = min(quantity_value, MAX_PURCHASE_QUANTITY)
                quantity_value -= part
                objects.append({**user, "product_id": str(product), "currency": currency.upper(),
                                "price": price_value, "quantity": part,
                                "time": envelope.get("occurred_at"), "properties": properties})
        if not objects:
            raise ItemInvalid("no purchasable basket lines")
        if len(objects) > MAX_OBJECTS:
            raise ItemInvalid("basket needs more than 75 purchase objects")
        return {"array": self.array, "objects": objects}


class _Trigger(Action):
    """Campaign/canvas trigger send.

    Recipients share a request (up to 50) when they target the same campaign/canvas
    (``batch_key``). A broadcast item gets a batch key of its own, so it always travels alone,
    with ``broadcast: true``, no recipients, and the "broadcast" rate-limit bucket.
    """

    id_field = ""
    properties_field = ""
    path = ""
    max_batch = MAX_RECIPIENTS
    limit = "trigger"

    def _target(self, delivery) -> str:
        target = resolve((delivery.get("params") or {}).get(self.id_field), delivery["envelope"])
        return str(target or "")

    def _broadcast(self, delivery) -> bool:
        params, envelope = delivery.get("params") or {}, delivery["envelope"]
        flag = resolve(params.get("broadcast"), envelope)
        if flag is None:
            flag = get_path(envelope, "payload.broadcast")
        return flag is True or str(flag).lower() in ("true", "1", "yes")

    def batch_key(self, delivery) -> str:
        if self._broadcast(delivery):
            return f"broadcast:{self._target(delivery)}:{delivery.get('event_id', '')}"
        return f"{self.id_field}:{self._target(delivery)}"

    def prepare(self, delivery, config):
        envelope, params = delivery["envelope"], delivery.get("params") or {}
        target = self._target(delivery)
        if not target:
            raise ItemInvalid(f"{self.id_field} missing")
        properties = _mapping(params, "properties", envelope)
        self._check_properties(properties)
        if self._broadcast(delivery):
            return {"target": target, "broadcast": True, "properties": properties}
        recipient: dict[str, Any] = {
            "external_user_id": _identify(envelope, allow_contact=False)["external_id"]}
        if properties:
            recipient[self.properties_field] = properties
        attributes = _mapping(params, "attributes", envelope)
        if attributes:
            recipient["attributes"] = attributes
        if "send_to_existing_only" in params:
            recipient["send_to_existing_only"] = bool(params["send_to_existing_only"])
        item = {"target": target, "broadcast": False, "recipient": recipient}
        if params.get("with_wallet") is True or str(params.get("with_wallet")).lower() == "true":
            ids = envelope.get("identities") or {}
            user = ids.get("sessionm_user_id") or ids.get("customer_id")
            if not user:
                raise ItemInvalid("with_wallet needs a SessionM user id or customer id")
            fallback = params.get("wallet_fallback")
            if fallback not in (None, "send", "retry"):
                raise ItemInvalid("wallet_fallback must be send or retry")
            try:
                max_offers = int(params.get("wallet_max_offers", 10))
            except (TypeError, ValueError):
                raise ItemInvalid("wallet_max_offers must be a whole number") from None
            item["wallet"] = {"user": str(user), "fallback": fallback, "max_offers": max_offers}
        return item

    def _check_properties(self, properties: Mapping[str, Any]) -> None:
        pass

    async def _enrich(self, item: dict[str, Any]) -> tuple[dict[str, Any] | None,
                                                          ItemResult | None]:
        """The item with its wallet properties, or the result that replaces sending it."""
        spec = item.get("wallet")
        if not spec:
            return item, None
        provider = wallets.wallet_provider()
        try:
            extra = wallets.wallet_properties(await provider.wallet(spec["user"]),
                                              spec["max_offers"])
        except wallets.WalletUnavailable as exc:
            if (spec["fallback"] or provider.fallback) == "retry":
                return None, ItemResult("retry", str(exc))
            extra = dict(wallets.UNAVAILABLE)
        recipient = dict(item["recipient"])
        base = recipient.get(self.properties_field) or {}
        properties = {**base, **extra}
        try:
            self._check_properties(properties)
        except ItemInvalid:  # the offers don't fit: keep the counts, drop the list
            properties = {**base, **{k: v for k, v in extra.items() if k != "wallet_offers"}}
        recipient[self.properties_field] = properties
        return {**item, "recipient": recipient}, None

    async def perform(self, send, items, config) -> list[ItemResult]:
        """One request for the batch; with_wallet items are enriched first (concurrently).

        When a wallet can't be read and the fallback is ``retry``, the whole batch is held for
        a retry (the request would otherwise carry fewer recipients than deliveries); the other
        items' wallets are cached by then, so the retry costs no extra SessionM calls."""
        enriched = await asyncio.gather(*(self._enrich(item) for item in items))
        held = [result for _, result in enriched if result is not None]
        if held:
            return [result or ItemResult("retry", "held_with_batch")
                    for _, result in enriched]
        reply = await send(self.request([item for item, _ in enriched], config))
        return self.interpret(reply, items)

    def request(self, items, config) -> HttpRequest:
        first = items[0]
        body: dict[str, Any] = {self.id_field: first["target"]}
        if first["broadcast"]:
            if len(items) != 1:
                raise ValueError("a broadcast trigger must travel alone")
            body["broadcast"] = True
            if first["properties"]:
                body[self.properties_field] = first["properties"]
            return HttpRequest("POST", self.path, json=body, limit="broadcast")
        body["recipients"] = [item["recipient"] for item in items]
        return HttpRequest("POST", self.path, json=body, limit=self.limit)


class CampaignTrigger(_Trigger):
    name = "campaign_trigger"
    id_field = "campaign_id"
    properties_field = "trigger_properties"
    path = "/campaigns/trigger/send"


class CanvasTrigger(_Trigger):
    name = "canvas_trigger"
    id_field = "canvas_id"
    properties_field = "canvas_entry_properties"
    path = "/canvas/trigger/send"

    def _check_properties(self, properties):
        # as sent: orjson, UTF-8
        size = len(orjson.dumps(properties, default=str, option=orjson.OPT_NON_STR_KEYS))
        if size > MAX_CANVAS_ENTRY_BYTES:
            raise ItemInvalid("canvas_entry_properties exceed 50 KB")


def auth_headers(config) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.token}"}


DESTINATION = Destination(
    name="braze",
    actions={a.name: a for a in (TrackAttributes(), TrackEvent(), TrackPurchase(),
                                 CampaignTrigger(), CanvasTrigger())},
    limits={"track": 1000.0, "trigger": 250_000 / 3600, "broadcast": 250 / 60},
    auth_headers=auth_headers,
)
