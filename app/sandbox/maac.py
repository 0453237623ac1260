"""Crescendo Lab MAAC Open API emulator (base `/maac`): pushes, message topics, reports, templates.

Why it behaves this way:
- A single push answers 200 even when LINE refused the message: `result` is "success" or LINE's
  error object. Uids starting with "Ublocked" have blocked the account and get
  `{"message", "details"}` so the relay can mark them unreachable (and retarget them via Insider).
- Multicast (1..150 recipients) is asynchronous: `{"id", "result": "pending"}`, then
  `GET /openapi/v1/direct_message/{id}/` reports `pending` until `multicast_delay_s` has passed and
  `sent` afterwards, with `fail_info` naming the blocked uids. Recipients go in `data` (a list of
  objects, each with `line_uid` and its template variables; `users` is accepted as an alias).
- Pushes carrying `event_id` are tracked: for `open_share` of the delivered recipients (chosen by
  a hash of uid + event id, so runs agree) a first open happens after `webhook_delay_s`, is sent as
  a signed `message.first_open` webhook (see `webhooks.py`) and counts in the topic report, as do
  clicks by a stable subset of openers. Unknown event ids are created on first use, so routing
  rules may name any topic id in sandbox mode.
- Validation: `template_id` int, `event_id` int, `data.line_uid` exactly 33 characters, variables
  are scalars, variables whose name contains "image"/"img" must be .jpg/.jpeg/.png URLs.
- Limits: push 170/s, multicast 10/s; 429 `{"detail": ...}`. Errors are `{"detail": "..."}`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Any, ClassVar
from urllib.parse import urlparse

from aiohttp import web

from app.sandbox.core import (
    Ctx,
    Emulator,
    Endpoint,
    Invalid,
    Result,
    bearer_ok,
    fraction,
    is_int,
    is_number,
    need_dict,
)
from app.sandbox.line import blocked
from app.sandbox.webhooks import WebhookSender, sign_webhook

__all__ = ["Maac", "sign_webhook"]

MAX_MULTICAST = 150
MAX_TOPICS = 1000
CLICK_SHARE = 0.4
TEMPLATES = [{"id": 1000 + i, "name": f"Sandbox template {i}", "type": "flex"} for i in range(1, 4)]
BLOCKED_RESULT = {
    "message": "Failed to send messages",
    "details": [{"message": "The user has blocked the account or is not a friend",
                 "property": "to"}],
}


def _is_image_name(name: str) -> bool:
    lowered = name.lower()
    return "image" in lowered or "img" in lowered


def _check_recipient(data: Any, where: str) -> dict:
    if not isinstance(data, dict):
        raise Invalid(400, f"{where} must be an object")
    uid = data.get("line_uid")
    if not isinstance(uid, str) or len(uid) != 33:
        raise Invalid(400, f"{where}.line_uid must be a 33-character LINE uid")
    for name, value in data.items():
        if value is not None and not isinstance(value, str) and not is_number(value):
            raise Invalid(400, f"{where}.{name} must be a string or a number")
        if _is_image_name(name) and name != "line_uid":
            path = urlparse(str(value)).path.lower() if value else ""
            if not str(value).startswith(("http://", "https://")) or not path.endswith(
                    (".jpg", ".jpeg", ".png")):
                raise Invalid(400, f"{where}.{name} must be a .jpg or .png URL")
    return data


class Maac(Emulator):
    name = "maac"
    prefix = "/maac"
    buckets: ClassVar[dict[str, tuple[int, float]]] = {"maac.push": (170, 1.0), "maac.multicast": (10, 1.0)}

    def __init__(self, hub) -> None:
        super().__init__(hub)
        self.webhooks = WebhookSender(hub)
        self.topics: dict[int, dict[str, Any]] = {}
        self.next_topic = 1
        self.next_message = 1
        self.multicasts: dict[int, dict[str, Any]] = {}
        # event id -> list of (at, template_id) per successful send
        self.sends: dict[int, list[tuple[float, int]]] = defaultdict(list)
        # event id -> uid -> (open time, template id); first opens only
        self.opens: dict[int, dict[str, tuple[float, int]]] = defaultdict(dict)

    def reset_stats(self) -> None:
        self.webhooks.reset_stats()

    def endpoints(self) -> list[Endpoint]:
        base = "/openapi/v1"
        return [
            Endpoint("push", "POST", f"{base}/direct_message/push/", self.push, ("maac.push",)),
            Endpoint("multicast", "POST", f"{base}/direct_message/multicast/", self.multicast,
                     ("maac.multicast",)),
            Endpoint("direct_message.get", "GET", f"{base}/direct_message/{{id}}/", self.status,
                     items=False),
            Endpoint("event.list", "GET", f"{base}/event/", self.list_topics, items=False),
            Endpoint("event.create", "POST", f"{base}/event/", self.create_topic, items=False),
            Endpoint("event.report", "GET", f"{base}/event/{{id}}/report/", self.report,
                     items=False),
            Endpoint("template.list", "GET", f"{base}/template/", self.templates, items=False),
        ]

    def authorized(self, request: web.Request, tail: str, raw: bytes) -> bool:
        return bearer_ok(request, self.hub.keys["MAAC_TOKEN"])

    def error_body(self, status: int, message: str) -> Any:
        return {"detail": message}

    def rate_limited_message(self) -> str:
        return "Request was throttled. Expected available in 1 second."

    # -- message topics -------------------------------------------------------------------
    def _topic(self, event_id: int, name: str | None = None) -> dict[str, Any]:
        topic = self.topics.get(event_id)
        if topic is None:
            if len(self.topics) >= MAX_TOPICS:
                raise Invalid(400, f"At most {MAX_TOPICS} message topics per account")
            topic = {"id": event_id, "name": name or f"sandbox topic {event_id}",
                     "created_at": datetime.now(UTC).isoformat()}
            self.topics[event_id] = topic
            self.next_topic = max(self.next_topic, event_id + 1)
        return topic

    async def list_topics(self, ctx: Ctx) -> Result:
        results = list(self.topics.values())
        return Result(200, {"count": len(results), "next": None, "previous": None,
                            "results": results})

    async def create_topic(self, ctx: Ctx) -> Result:
        name = need_dict(ctx.body).get("name")
        if not isinstance(name, str) or not name.strip():
            raise Invalid(400, "name is required")
        if any(t["name"] == name for t in self.topics.values()):
            raise Invalid(400, "A message topic with this name already exists")
        topic = self._topic(self.next_topic, name)
        return Result(201, {"id": topic["id"], "name": topic["name"]})

    # -- pushes ---------------------------------------------------------------------------
    @staticmethod
    def _ids(body: dict) -> tuple[int, int | None]:
        template_id, event_id = body.get("template_id"), body.get("event_id")
        if not is_int(template_id) or template_id <= 0:
            raise Invalid(400, "template_id is required and must be an integer")
        if event_id is not None and (not is_int(event_id) or event_id <= 0):
            raise Invalid(400, "event_id must be an integer")
        return template_id, event_id

    def _delivered(self, event_id: int | None, template_id: int, data: dict, delay: float) -> None:
        """Book-keeping for one delivered message: the send, and maybe a first open."""
        if event_id is None:
            return
        now = time.time()
        self.sends[event_id].append((now, template_id))
        uid = data["line_uid"]
        if uid in self.opens[event_id] or fraction(uid, event_id) >= self.hub.open_share:
            return
        self.opens[event_id][uid] = (now + delay, template_id)
        self.webhooks.first_open(delay, event_id, uid, data.get("customer_id"))

    async def push(self, ctx: Ctx) -> Result:
        body = need_dict(ctx.body)
        template_id, event_id = self._ids(body)
        data = _check_recipient(body.get("data"), "data")
        if event_id is not None:
            self._topic(event_id)
        message_id = self.next_message
        self.next_message += 1
        if blocked(data["line_uid"]):
            return Result(200, {"id": message_id, "event": event_id, "result": BLOCKED_RESULT},
                          accepted=[False])
        self._delivered(event_id, template_id, data, self.hub.webhook_delay_s)
        return Result(200, {"id": message_id, "event": event_id, "result": "success"})

    async def multicast(self, ctx: Ctx) -> Result:
        body = need_dict(ctx.body)
        template_id, event_id = self._ids(body)
        users = body.get("data", body.get("users"))
        if not isinstance(users, list) or not 1 <= len(users) <= MAX_MULTICAST:
            raise Invalid(400, f"data must list 1 to {MAX_MULTICAST} recipients")
        users = [_check_recipient(u, f"data[{i}]") for i, u in enumerate(users)]
        if event_id is not None:
            self._topic(event_id)
        job_id = self.next_message
        self.next_message += 1
        delay = self.hub.multicast_delay_s
        fail_info, flags = [], []
        for i, user in enumerate(users):
            ok = not blocked(user["line_uid"])
            flags.append(ok)
            if ok:
                self._delivered(event_id, template_id, user, delay + self.hub.webhook_delay_s)
            else:
                fail_info.append({"line_uid": user["line_uid"],
                                  "mark": user.get("customer_id", str(i)),
                                  "response": BLOCKED_RESULT})
        self.multicasts[job_id] = {"created": time.monotonic(), "delay": delay,
                                   "total": len(users), "fail_info": fail_info,
                                   "event": event_id}
        return Result(200, {"id": job_id, "result": "pending"}, accepted=flags)

    async def status(self, ctx: Ctx) -> Result:
        try:
            job = self.multicasts[int(ctx.match["id"])]
        except (KeyError, ValueError):
            raise Invalid(404, "Not found.") from None
        done = time.monotonic() - job["created"] >= job["delay"]
        reply: dict[str, Any] = {"id": int(ctx.match["id"]), "event": job["event"],
                                 "status": "sent" if done else "pending"}
        if done:
            reply["result"] = {"total_count": job["total"], "fail_count": len(job["fail_info"]),
                               "fail_info": job["fail_info"]}
        return Result(200, reply)

    # -- reports and templates ------------------------------------------------------------
    async def report(self, ctx: Ctx) -> Result:
        try:
            event_id = int(ctx.match["id"])
        except ValueError:
            raise Invalid(404, "Not found.") from None
        if event_id not in self.topics:
            raise Invalid(404, "Not found.")
        start, end = _date(ctx.query.get("start_date")), _date(ctx.query.get("end_date"))
        now = time.time()

        def within(at: float) -> bool:
            day = datetime.fromtimestamp(at, UTC).date()
            return (start is None or day >= start) and (end is None or day <= end)

        per_message: dict[int, dict[str, int]] = defaultdict(
            lambda: {"sent": 0, "opens": 0, "clicks": 0, "unique_clicks": 0})
        for at, template_id in self.sends.get(event_id, []):
            if within(at):
                per_message[template_id]["sent"] += 1
        for uid, (at, template_id) in self.opens.get(event_id, {}).items():
            if at > now or not within(at):
                continue
            row = per_message[template_id]
            row["opens"] += 1
            if fraction("click", uid, event_id) < CLICK_SHARE:
                row["unique_clicks"] += 1
                row["clicks"] += 2 if fraction("again", uid, event_id) < 0.25 else 1
        totals = {k: sum(r[k] for r in per_message.values())
                  for k in ("sent", "opens", "clicks", "unique_clicks")}
        urls = [{"url": f"https://shop.example.com/t/{tid}", "clicks": r["clicks"],
                 "unique_clicks": r["unique_clicks"]} for tid, r in per_message.items()]
        messages = [{"template_id": tid, **r} for tid, r in per_message.items()]
        return Result(200, {
            "event_id": event_id, "name": self.topics[event_id]["name"],
            "start_date": ctx.query.get("start_date"), "end_date": ctx.query.get("end_date"),
            **totals, "adds_to_cart": 0, "transactions": 0, "transaction_revenue": 0,
            "urls": urls, "messages": messages,
        })

    async def templates(self, ctx: Ctx) -> Result:
        return Result(200, {"count": len(TEMPLATES), "next": None, "previous": None,
                            "results": TEMPLATES})

    def extra_stats(self) -> dict[str, Any]:
        now = time.time()
        opened = sum(1 for per in self.opens.values() for at, _ in per.values() if at <= now)
        return {"webhooks": dict(self.webhooks.counts), "opens": opened,
                "topics": len(self.topics)}


def _date(raw: str | None) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise Invalid(400, "dates must be YYYY-MM-DD") from None
