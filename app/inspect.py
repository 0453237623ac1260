"""`relay inspect`: what the relay would do with one raw payload, calling nothing.

Prints the normalized envelope(s) and, for each planned delivery, the request the destination
would receive and the screening decision (send, defer until, suppress and why: consent, caps,
quiet hours) for the profile given with `--profile` (none: a customer the relay knows nothing
about) at `--at`, so an upstream team can check a payload and a routing rule before publishing.
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


def screening(settings: Settings, delivery: dict[str, Any], profile: dict[str, Any] | None,
              at: str | None) -> dict[str, Any]:
    """The route stage's verdict on one delivery for `profile` at `at` (app/agents/screen.py)."""
    from datetime import UTC, datetime

    from app.agents.screen import apply_signals, zone_of
    from app.safety.decide import decide
    from app.safety.policy import load_policy

    policy = load_policy(settings.messaging_file)
    now = datetime.now(UTC)
    if at:
        now = datetime.fromisoformat(at.replace("Z", "+00:00"))
        now = now if now.tzinfo else now.replace(tzinfo=UTC)
    prof = dict(profile or {})
    apply_signals(prof, delivery.get("envelope") or {})
    decision = decide(policy, delivery, prof.get("c") or {}, prof.get("h") or [],
                      zone_of(prof, policy), now)
    return {"action": decision.action, "reason": decision.reason,
            "channel": decision.channel, "purpose": decision.purpose,
            "until": decision.until.isoformat() if decision.until else None}


def inspect_payload(settings: Settings, source: str, raw: bytes,
                    profile: dict[str, Any] | None = None, at: str | None = None
                    ) -> tuple[dict[str, Any] | None, str | None]:
    if source not in SOURCES:
        return None, f"unknown source {source!r}"
    try:
        envelopes = normalize_bytes(source, raw, {}, settings)
    except Rejected as exc:
        return None, f"rejected ({exc.code}): {exc.detail or exc.code}"
    rules = load_rules(settings.routes_file)
    deliveries = []
    for env in envelopes:
        for delivery in plan(rules, env):
            try:
                verdict = screening(settings, delivery, profile, at)
            except ValueError as exc:
                return None, f"cannot screen against the profile: {exc}"
            deliveries.append({**preview(delivery, settings), "decision": verdict})
    return {"envelopes": envelopes, "deliveries": deliveries}, None
