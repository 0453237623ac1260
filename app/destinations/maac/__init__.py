"""Crescendo Lab MAAC: LINE pushes for journey steps.

Actions and the params they read (strings `"$.a.b"` are envelope paths):

- ``push``: ``template_id`` (int; default ``$.payload.template_id``),
  ``event_id`` (int, optional; default ``$.payload.maac_event_id``) or ``event_name`` (a message
  topic looked up or created with `ensure_topic`), ``variables`` (a mapping, or a path to one,
  merged over ``payload.variables``). The LINE uid comes from identities.line_uid (the route
  stage enriches identities from the identity graph). Without one, or with a malformed one, the
  item is "unreachable" without any request: never retried, and the feedback stage reports it to
  Insider as ``line.unreachable``.
  **Single push or multicast.** `push` batches by template id + event id (the same key as
  ``multicast``, up to 150 per group). When a group the sink took at once holds at least
  ``config.extra["multicast_min"]`` (default `MULTICAST_MIN`) sendable users, `perform` sends it as
  one multicast and polls its status; smaller groups go as single pushes (concurrently, each
  drawing from the push rate limit). So a journey that fires for many customers at once costs a
  few multicast calls, and a trickle of triggers keeps the low latency of single pushes.
- ``multicast`` (up to 150 users per call, batched by template id + event id): same params;
  `perform` posts the multicast, then polls its status and maps ``fail_info[].line_uid`` back to
  the items as "unreachable". Poll pacing: ``config.extra["poll_interval_s"]`` (default 0.5) and
  ``config.extra["poll_max"]`` (default 20).

Image variables (keys containing "image", or values that are image URLs) must be .jpg/.jpeg/.png.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

from app.destinations.base import (
    Action,
    Destination,
    HttpRequest,
    ItemInvalid,
    ItemResult,
    Reply,
    Send,
    classify,
    short,
)
from app.destinations.mapping import get_path, resolve

PUSH_PATH = "/openapi/v1/direct_message/push/"
MULTICAST_PATH = "/openapi/v1/direct_message/multicast/"
EVENT_PATH = "/openapi/v1/event/"
MAX_MULTICAST = 150
MULTICAST_MIN = 10
# LINE user ids are "U" + 32 hex digits; accept any 33-character alphanumeric id starting with U
# (the contract only promises 33 characters; the sandbox uses readable ones).
LINE_UID = re.compile(r"^U[0-9A-Za-z]{32}$")
_UID_ANYWHERE = re.compile(r"\bU[0-9A-Za-z]{32}\b")
_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".svg", ".tif", ".tiff", ".heic")
_ALLOWED_IMAGE_EXT = (".jpg", ".jpeg", ".png")


def _redact(text: str) -> str:
    return _UID_ANYWHERE.sub("<line_uid>", text)[:200]


def line_error_reason(error: Any) -> str:
    """A short reason from a LINE error object (or its JSON text), without any LINE uid."""
    if isinstance(error, str):
        try:
            error = json.loads(error)
        except ValueError:
            return _redact(error) or "LINE error"
    if not isinstance(error, Mapping):
        return "LINE error"
    message = str(error.get("message") or "LINE error")
    details = [str(d.get("message")) for d in error.get("details") or []
               if isinstance(d, Mapping) and d.get("message")]
    return _redact("; ".join([message, *details]))


def _url_path(value: str) -> str | None:
    parsed = urlparse(value)
    if parsed.scheme in ("http", "https") and parsed.netloc:
        return parsed.path.lower()
    return None


def check_images(variables: Mapping[str, Any]) -> None:
    """ItemInvalid if an image variable is not a .jpg/.jpeg/.png URL."""
    for key, value in variables.items():
        text = str(value)
        path = _url_path(text)
        if "image" in key.lower():
            if path is None or not path.endswith(_ALLOWED_IMAGE_EXT):
                raise ItemInvalid(f"variable {key!r} must be a .jpg or .png URL")
        elif path is not None and path.endswith(_IMAGE_EXT) and not path.endswith(
                _ALLOWED_IMAGE_EXT):
            raise ItemInvalid(f"variable {key!r} is an image URL that is not .jpg or .png")


def _int(value: Any, what: str) -> int | None:
    if value in (None, ""):
        return None
    if isinstance(value, bool):
        raise ItemInvalid(f"{what} must be an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ItemInvalid(f"{what} must be an integer") from None
    if isinstance(value, float) and value != number:
        raise ItemInvalid(f"{what} must be an integer")
    return number


def _message(delivery: Mapping[str, Any]) -> dict[str, Any]:
    """Template, topic and per-user data of one delivery (shared by push and multicast)."""
    envelope, params = delivery["envelope"], delivery.get("params") or {}
    uid = (envelope.get("identities") or {}).get("line_uid")
    unreachable = "no LINE uid" if not uid else (
        "LINE uid malformed" if not LINE_UID.match(str(uid)) else None)
    if unreachable:
        return {"unreachable": unreachable, "delivery_id": delivery.get("delivery_id"),
                "template_id": None, "event_id": None, "event_name": None, "data": {}}
    template_id = _int(resolve(params.get("template_id", "$.payload.template_id"), envelope),
                       "template_id")
    if template_id is None:
        raise ItemInvalid("template_id missing")
    event_id = _int(resolve(params.get("event_id", "$.payload.maac_event_id"), envelope),
                    "event_id")
    event_name = resolve(params.get("event_name"), envelope) if event_id is None else None
    variables: dict[str, Any] = {}
    base = get_path(envelope, "payload.variables")
    if isinstance(base, Mapping):
        variables.update(base)
    override = resolve(params.get("variables"), envelope)
    if isinstance(override, Mapping):
        variables.update({k: resolve(v, envelope) for k, v in override.items()})
    elif override is not None:
        raise ItemInvalid("variables must be a mapping")
    data = {str(k): v if isinstance(v, str) else str(v)
            for k, v in variables.items() if v not in (None, "") and k != "line_uid"}
    check_images(data)
    return {"template_id": template_id, "event_id": event_id,
            "event_name": str(event_name) if event_name else None,
            "delivery_id": delivery.get("delivery_id"),
            "data": {"line_uid": str(uid), **data}}


def group_key(delivery: Mapping[str, Any]) -> str:
    """Template id + event id (or topic name): deliveries that may share a multicast."""
    envelope, params = delivery["envelope"], delivery.get("params") or {}
    template = resolve(params.get("template_id", "$.payload.template_id"), envelope)
    event = resolve(params.get("event_id", "$.payload.maac_event_id"), envelope)
    if event in (None, ""):
        event = "name:" + str(resolve(params.get("event_name"), envelope) or "")
    return f"{template}:{event}"


def event_id_of(delivery: Mapping[str, Any], base_url: str = "") -> int | None:
    """The MAAC event id a delivery was sent with (a topic name through the cache), if any."""
    envelope, params = delivery.get("envelope") or {}, delivery.get("params") or {}
    try:
        event_id = _int(resolve(params.get("event_id", "$.payload.maac_event_id"), envelope),
                        "event_id")
    except ItemInvalid:
        return None
    if event_id is None:
        name = resolve(params.get("event_name"), envelope)
        event_id = _TOPIC_CACHE.get((base_url, str(name))) if name else None
    return event_id


# MAAC event id -> when this process last sent with it (the topic-report poller's work list).
RECENT_EVENTS: dict[int, float] = {}
RECENT_MAX = 1000  # MAAC allows 1,000 topics per account


def _used(event_id: int | None) -> None:
    if event_id is None:
        return
    RECENT_EVENTS.pop(event_id, None)
    RECENT_EVENTS[event_id] = time.time()
    while len(RECENT_EVENTS) > RECENT_MAX:
        RECENT_EVENTS.pop(next(iter(RECENT_EVENTS)))


async def _send(send: Send, request: HttpRequest, items: Sequence[Any]) -> Reply:
    """Send a request carrying `items`; in sandbox mode only their delivery ids are traced.

    The delivery core's `send(request, relay_ids)` defaults to every delivery of the chunk; a
    chunk split into several requests names the deliveries of each one."""
    ids = [item["delivery_id"] for item in items if item.get("delivery_id")]
    return await send(request, ids) if ids else await send(request)


def _split_unreachable(items: Sequence[Any]) -> tuple[list[int], dict[int, ItemResult]]:
    sendable, results = [], {}
    for index, item in enumerate(items):
        if item.get("unreachable"):
            results[index] = ItemResult("unreachable", item["unreachable"], 0)
        else:
            sendable.append(index)
    return sendable, results


_TOPIC_CACHE: dict[tuple[str, str], int] = {}
# One look-up per name at a time: concurrent chunks naming the same new topic must not both
# create it (MAAC refuses a second topic with the same name).
_TOPIC_LOCKS: dict[tuple[str, str], asyncio.Lock] = {}


async def _find_topic(send: Send, name: str, max_pages: int) -> int | None:
    path: str | None = EVENT_PATH
    for _ in range(max_pages):
        if not path:
            break
        reply = await send(HttpRequest("GET", path))
        if not reply.ok:
            raise TopicUnavailable(classify(reply))
        body = reply.body
        entries = body.get("results", []) if isinstance(body, Mapping) else body
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, Mapping) and entry.get("name") == name and "id" in entry:
                return int(entry["id"])
        path = body.get("next") if isinstance(body, Mapping) else None
    return None


async def ensure_topic(send: Send, config: Any, name: str, max_pages: int = 20) -> int:
    """The id of the MAAC message topic called `name`, created if missing; cached per process
    (MAAC allows 1,000 topics per account, so the cache stays small).

    Raises `TopicUnavailable` (carrying the ItemResult to report) when MAAC can't answer, or
    refuses to create it (e.g. the account already has 1,000 topics)."""
    key = (getattr(config, "base_url", ""), name)
    if key in _TOPIC_CACHE:
        return _TOPIC_CACHE[key]
    async with _TOPIC_LOCKS.setdefault(key, asyncio.Lock()):
        if key in _TOPIC_CACHE:
            return _TOPIC_CACHE[key]
        found = await _find_topic(send, name, max_pages)
        if found is None:
            reply = await send(HttpRequest("POST", EVENT_PATH, json={"name": name},
                                           delivers=False))
            if reply.status == 400:  # another worker may have created it meanwhile
                found = await _find_topic(send, name, max_pages)
                if found is None:
                    raise TopicUnavailable(classify(reply))
            elif not reply.ok or not isinstance(reply.body, Mapping) or "id" not in reply.body:
                raise TopicUnavailable(classify(reply) if not reply.ok
                                       else ItemResult("retry", "topic_create_unparsed",
                                                       reply.status))
            else:
                found = int(reply.body["id"])
        _TOPIC_CACHE[key] = found
        return found


class TopicUnavailable(Exception):
    def __init__(self, result: ItemResult):
        super().__init__(result.reason)
        self.result = result


async def _resolve_topics(send: Send, items: Sequence[Any], config: Any) -> ItemResult | None:
    for item in items:
        if item["event_id"] is None and item["event_name"]:
            try:
                item["event_id"] = await ensure_topic(send, config, item["event_name"])
            except TopicUnavailable as exc:
                return exc.result
    return None


def _multicast_min(config: Any) -> int:
    extra = getattr(config, "extra", {}) or {}
    try:
        return max(2, int(extra.get("multicast_min", MULTICAST_MIN)))
    except (TypeError, ValueError):
        return MULTICAST_MIN


class Push(Action):
    """Single push (or, for a large group of one template/topic, a multicast: see the module doc).

    A 200 is not a delivery: ``result`` says what LINE did."""

    name = "push"
    max_batch = MAX_MULTICAST
    limit = "push"

    def batch_key(self, delivery) -> str:
        return group_key(delivery)

    def prepare(self, delivery, config):
        return _message(delivery)

    def request(self, items, config) -> HttpRequest:
        item = items[0]
        if item.get("unreachable"):  # `perform` never asks; `relay inspect` shows the reason
            raise ItemInvalid(f"unreachable: {item['unreachable']}")
        body: dict[str, Any] = {"template_id": item["template_id"], "data": item["data"]}
        if item["event_id"] is not None:
            body["event_id"] = item["event_id"]
        return HttpRequest("POST", PUSH_PATH, json=body, limit=self.limit)

    def interpret(self, reply: Reply, items: Sequence[Any]) -> list[ItemResult]:
        if not reply.ok:
            return [classify(reply)] * len(items)
        body = reply.body if isinstance(reply.body, Mapping) else {}
        result = body.get("result", "success")
        if result == "success":
            outcome = ItemResult("delivered", "", reply.status)
        elif result in ("timeout", "error"):
            # "timeout": LINE did not answer MAAC in time, so the push may have reached the
            # person; like a request of ours left unanswered, it is not sent again blindly.
            outcome = ItemResult("retry", f"maac_{result}", reply.status,
                                 unanswered=result == "timeout")
        elif isinstance(result, Mapping):
            reason = line_error_reason(result)
            outcome = ItemResult("unreachable", reason, reply.status, detail=reason)
        else:
            outcome = ItemResult("retry", "maac_result_unknown", reply.status,
                                 detail=_redact(str(short(result))))
        return [outcome] * len(items)

    async def _one(self, send: Send, item: Any, config: Any) -> ItemResult:
        _used(item["event_id"])
        reply = await _send(send, self.request([item], config), [item])
        return self.interpret(reply, [item])[0]

    async def perform(self, send, items, config) -> list[ItemResult]:
        sendable, results = _split_unreachable(items)
        todo = [items[i] for i in sendable]
        failure = await _resolve_topics(send, todo, config)
        if failure is not None:
            results.update({i: failure for i in sendable})
        elif len(todo) >= _multicast_min(config):
            results.update(zip(sendable, await MULTICAST.perform(send, todo, config)))
        elif todo:
            answers = await asyncio.gather(*(self._one(send, item, config) for item in todo))
            results.update(zip(sendable, answers))
        return [results[i] for i in range(len(items))]


class Multicast(Action):
    """Multicast to up to 150 users of one template/topic; asynchronous, so `perform` polls.

    When the status is still not "sent" after the last poll, the items count as delivered with
    reason "status_unknown": MAAC accepted them, and re-sending could message users twice."""

    name = "multicast"
    max_batch = MAX_MULTICAST
    limit = "multicast"

    def batch_key(self, delivery) -> str:
        return group_key(delivery)

    def prepare(self, delivery, config):
        return _message(delivery)

    def request(self, items, config) -> HttpRequest:
        items = [item for item in items if not item.get("unreachable")]
        if not items:
            raise ItemInvalid("unreachable: no recipient with a LINE uid")
        first = items[0]
        body: dict[str, Any] = {"template_id": first["template_id"],
                                "data": [item["data"] for item in items]}
        if first["event_id"] is not None:
            body["event_id"] = first["event_id"]
        return HttpRequest("POST", MULTICAST_PATH, json=body, limit=self.limit)

    def interpret_status(self, body: Any, items: Sequence[Any]) -> list[ItemResult] | None:
        """Per-item results from a status body, or None while it is still pending/sending."""
        if not isinstance(body, Mapping) or body.get("status") != "sent":
            return None
        result = body.get("result") if isinstance(body.get("result"), Mapping) else {}
        failed: dict[str, str] = {}
        for entry in result.get("fail_info") or []:
            if isinstance(entry, Mapping) and entry.get("line_uid"):
                # `mark` is the sender's own per-user marker, not a reason: report LINE's answer
                failed[str(entry["line_uid"])] = line_error_reason(entry.get("response"))
        return [ItemResult("unreachable", failed[item["data"]["line_uid"]], 200)
                if item["data"]["line_uid"] in failed else ItemResult("delivered", "", 200)
                for item in items]

    async def perform(self, send, items, config) -> list[ItemResult]:
        sendable, results = _split_unreachable(items)
        todo = [items[i] for i in sendable]
        if todo:
            answers = await self._multicast(send, todo, config)
            results.update(zip(sendable, answers))
        return [results[i] for i in range(len(items))]

    async def _multicast(self, send, items, config) -> list[ItemResult]:
        failure = await _resolve_topics(send, items, config)
        if failure is not None:
            return [failure] * len(items)
        _used(items[0]["event_id"])
        reply = await _send(send, self.request(items, config), items)
        if not reply.ok:
            return [classify(reply)] * len(items)
        message_id = reply.body.get("id") if isinstance(reply.body, Mapping) else None
        if message_id is None:
            return [ItemResult("delivered", "status_unknown", reply.status)] * len(items)
        extra = getattr(config, "extra", {}) or {}
        interval = float(extra.get("poll_interval_s", "0.5"))
        polls = int(extra.get("poll_max", "20"))
        for attempt in range(polls):
            if attempt:
                await asyncio.sleep(interval)
            status = await send(HttpRequest("GET", f"/openapi/v1/direct_message/{message_id}/",
                                            limit="default"))
            if status.ok:
                results = self.interpret_status(status.body, items)
                if results is not None:
                    return results
        return [ItemResult("delivered", "status_unknown", reply.status)] * len(items)


MULTICAST = Multicast()


def auth_headers(config) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.token}"}


DESTINATION = Destination(
    name="maac",
    actions={"push": Push(), "multicast": MULTICAST},
    limits={"push": 170.0, "multicast": 10.0, "default": 10.0},
    auth_headers=auth_headers,
)
