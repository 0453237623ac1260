"""`relay inspect`: what the relay would do with one raw payload, calling nothing.

Prints the normalized envelope(s) and, for each planned delivery, the request the destination
would receive, so an upstream team can check a payload and a routing rule before publishing.
"""

from __future__ import annotations

from typing import Any

from app.config import Settings
from app.destinations.base import ItemInvalid
from app.destinations.registry import DESTINATIONS
from app.envelope import Rejected
from app.normalize import SOURCES, normalize_bytes
from app.routing import load_rules, plan


def preview(delivery: dict[str, Any], settings: Settings) -> dict[str, Any]:
    dest = DESTINATIONS[delivery["destination"]]
    action = dest.actions[delivery["action"]]
    config = settings.destination(delivery["destination"])
    summary = {k: delivery[k] for k in ("delivery_id", "destination", "action", "route")}
    try:
        item = action.prepare(delivery, config)
        request = action.request([item], config)
    except ItemInvalid as exc:
        return {**summary, "invalid": str(exc)}
    except NotImplementedError:
        return {**summary, "item": item}
    return {**summary, "request": {"method": request.method, "path": request.path,
                                   "json": request.json}}


def inspect_payload(settings: Settings, source: str,
                    raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    if source not in SOURCES:
        return None, f"unknown source {source!r}"
    try:
        envelopes = normalize_bytes(source, raw, {}, settings)
    except Rejected as exc:
        return None, f"rejected ({exc.code}): {exc.detail or exc.code}"
    rules = load_rules(settings.routes_file)
    deliveries = [preview(d, settings) for env in envelopes for d in plan(rules, env)]
    return {"envelopes": envelopes, "deliveries": deliveries}, None
