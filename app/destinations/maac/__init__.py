"""Crescendo Lab MAAC: LINE pushes for journey steps.

Actions and the params they read (strings `"$.a.b"` are envelope paths):

- ``push`` (one user per call): ``template_id`` (int; default ``$.payload.template_id``),
  ``event_id`` (int, optional; default ``$.payload.maac_event_id``) or ``event_name`` (a message
  topic looked up or created with `ensure_topic`), ``variables`` (a mapping, or a path to one,
  merged over ``payload.variables``). The LINE uid comes from identities.line_uid; without one
  `prepare` raises ``ItemInvalid("no LINE uid")``, which the sink records and reports as
  ``line.unreachable`` feedback (the item can never be sent on this channel).
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
    if not uid:
        raise ItemInvalid("no LINE uid")
    if not LINE_UID.match(str(uid)):
        raise ItemInvalid("LINE uid malformed")
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
            "data": {"line_uid": str(uid), **data}}


_TOPIC_CACHE: dict[tuple[str, str], int] = {}


async def ensure_topic(send: Send, config: Any, name: str, max_pages: int = 20) -> int:
    """The id of the MAAC message topic called `name`, created if missing; cached per process.

    Raises `TopicUnavailable` (carrying the ItemResult to report) when MAAC can't answer."""
    key = (getattr(config, "base_url", ""), name)
    if key in _TOPIC_CACHE:
        return _TOPIC_CACHE[key]
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
                _TOPIC_CACHE[key] = int(entry["id"])
                return _TOPIC_CACHE[key]
        path = body.get("next") if isinstance(body, Mapping) else None
    reply = await send(HttpRequest("POST", EVENT_PATH, json={"name": name}))
    if not reply.ok or not isinstance(reply.body, Mapping) or "id" not in reply.body:
        raise TopicUnavailable(classify(reply) if not reply.ok
                               else ItemResult("retry", "topic_create_unparsed", reply.status))
    _TOPIC_CACHE[key] = int(reply.body["id"])
    return _TOPIC_CACHE[key]


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


class Push(Action):
    """Single push. A 200 is not a delivery: ``result`` says what LINE did."""

    name = "push"
    max_batch = 1
    limit = "push"

    def prepare(self, delivery, config):
        return _message(delivery)

    def request(self, items, config) -> HttpRequest:
        item = items[0]
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
            outcome = ItemResult("retry", f"maac_{result}", reply.status)
        elif isinstance(result, Mapping):
            reason = line_error_reason(result)
            outcome = ItemResult("unreachable", reason, reply.status, detail=reason)
        else:
            outcome = ItemResult("retry", "maac_result_unknown", reply.status,
                                 detail=_redact(str(short(result))))
        return [outcome] * len(items)

    async def perform(self, send, items, config) -> list[ItemResult]:
        failure = await _resolve_topics(send, items, config)
        if failure is not None:
            return [failure] * len(items)
        return self.interpret(await send(self.request(items, config)), items)


class Multicast(Action):
    """Multicast to up to 150 users of one template/topic; asynchronous, so `perform` polls.

    When the status is still not "sent" after the last poll, the items count as delivered with
    reason "status_unknown": MAAC accepted them, and re-sending could message users twice."""

    name = "multicast"
    max_batch = MAX_MULTICAST
    limit = "multicast"

    def batch_key(self, delivery) -> str:
        envelope, params = delivery["envelope"], delivery.get("params") or {}
        template = resolve(params.get("template_id", "$.payload.template_id"), envelope)
        event = resolve(params.get("event_id", "$.payload.maac_event_id"), envelope)
        if event in (None, ""):
            event = "name:" + str(resolve(params.get("event_name"), envelope) or "")
        return f"{template}:{event}"

    def prepare(self, delivery, config):
        return _message(delivery)

    def request(self, items, config) -> HttpRequest:
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
        failure = await _resolve_topics(send, items, config)
        if failure is not None:
            return [failure] * len(items)
        reply = await send(self.request(items, config))
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


def auth_headers(config) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.token}"}


DESTINATION = Destination(
    name="maac",
    actions={"push": Push(), "multicast": Multicast()},
    limits={"push": 170.0, "multicast": 10.0, "default": 10.0},
    auth_headers=auth_headers,
)
