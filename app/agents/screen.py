"""Screening: consent, frequency caps and quiet hours, applied where a message is planned.

It runs in the route stage because that stage owns the customer's profile (keyed by profile
id): the consent (`c`) and the contact history (`h`) live in the profile and change inside the
same event as the decision, so a restart or a replay sees what the decision saw, and a
replayed message finds its own delivery id in the history (it is not counted twice).

A held message is never silent: a metric (`relay_messaging_decisions_total`), an accounting
record (`suppressed` is final; `deferred` until the sink delivers it), and a
`message.suppressed` / `message.deferred` record on `feedback.insider`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog

from app import metrics
from app.agents.context import Relay
from app.feedback import from_decision
from app.identity import profile as profiles
from app.safety import caps, consent, quiet
from app.safety.decide import decide
from app.safety.policy import Policy, load_policy, message_kind

log = structlog.get_logger(__name__)


def policy_of(relay: Relay) -> Policy:
    return load_policy(relay.settings.messaging_file)  # parsed once per path (cached)


def zone_of(prof: dict | None, policy: Policy):
    attrs = (prof or {}).get("a") or {}
    country = (attrs.get("country") or [None])[0]
    phones = (prof or {}).get("i", {}).get("phone")
    phone = profiles.primary(phones) if phones else None
    return quiet.customer_zone(country, phone, policy.default_timezone)


def apply_signals(prof: dict, envelope: dict) -> bool:
    """Record the consent changes an event carries in its profile; True when any changed."""
    return apply_signal_list(prof, consent.signals(envelope))


async def screen(relay: Relay, delivery: dict[str, Any], prof: dict | None,
                 now: datetime | None = None) -> str:
    """"send", "defer" or "suppress" for one planned delivery; records what a held message
    needs (history, deferral, feedback, accounting). Mutates `prof` (history)."""
    policy = policy_of(relay)
    if message_kind(policy, delivery) is None:
        return "send"  # messages nobody (decide's "not_a_message"): no zone, no history needed
    now = now or datetime.now(UTC)
    history = (prof or {}).get("h") or []
    decision = decide(policy, delivery, (prof or {}).get("c") or {}, history,
                      zone_of(prof, policy), now)
    if decision.action != "send":
        metrics.SAFETY_DECISIONS.labels(decision.channel or "", decision.action,
                                        decision.reason.split(":")[0]).inc()
        log.info("safety.held", decision=decision.action, reason=decision.reason,
                 channel=decision.channel, destination=delivery["destination"])
        record = from_decision(delivery, decision)
        await relay.send("feedback.insider", record["customer_key"], record)
    if decision.action == "suppress":
        await relay.emit("deliver", "suppressed", destination=delivery["destination"],
                         action=delivery["action"], delivery_id=delivery["delivery_id"],
                         event_id=delivery["event_id"], reason=decision.reason)
        return "suppress"
    if decision.channel and prof is not None:
        prof["h"] = caps.record(history, caps_item(delivery, decision, now), now,
                                policy.history_keep_s)
    if decision.action == "defer":
        until = decision.until.timestamp()
        await relay.send("deliveries.deferred", delivery.get("customer_key"),
                         {**delivery, "not_before": until})
        await relay.emit("deliver", "deferred", destination=delivery["destination"],
                         action=delivery["action"], delivery_id=delivery["delivery_id"],
                         event_id=delivery["event_id"], reason=decision.reason)
        return "defer"
    return "send"


def install_outcome_consent(relay: Relay) -> None:
    """Destinations' answers that say something about consent (a LINE block, an Attentive
    subscribe or unsubscribe, a text refused as not subscribed) go back to the profile, through
    `identity.profiles` keyed by the profile id (the route stage owns the profile)."""
    import time

    async def hook(_dest: str, outcome: Any, _final: str) -> None:
        delivery = outcome.delivery
        pid = ((delivery.get("envelope") or {}).get("profile") or {}).get("id")
        if not pid:
            return
        found = consent.outcome_signals(delivery, outcome.status, outcome.reason or "",
                                        time.time())
        if found:
            await relay.to_profiles(pid, {"signals": [list(s) for s in found]}, op=b"consent")

    relay.outcome_hooks.append(hook)


def apply_signal_list(prof: dict, signals: list) -> bool:
    changed = False
    for channel, state, ts, source, explicit in signals:
        changed |= consent.apply(prof.setdefault("c", {}), channel, state, ts, source, explicit)
    return changed


def caps_item(delivery: dict[str, Any], decision: Any, now: datetime) -> list:
    journey = caps.journey_of(delivery)
    return [now.timestamp(), decision.channel, decision.purpose, journey, delivery["delivery_id"]]
