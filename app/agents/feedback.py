"""Feedback: LINE results -> `feedback.insider` -> Insider UCD, and the MAAC topic-report poller.

- An outcome hook turns the MAAC sink's outcomes into `line.sent` / `line.unreachable` records.
- A tap on the ingress agent's envelopes of `maac.results` (which still go on to the identity
  graph, so `line.bound` reaches it) republishes customer-level results (`line.opened`,
  `line.clicked`, `line.bound`) as feedback records, joining journey, template and identifiers
  from the push that caused an open.
- `feedback-insider` plans the deliveries of feedback records with the routing rules (the LINE
  rules match only feedback records, see app/feedback), writes the same "route" accounting
  record the route stage writes, and sends them to their delivery topics like the route stage:
  Insider's sink fills its 1,000-user upserts with them and the route stage's deliveries
  alike, under the same ledger, retry lane, DLQ and outcome records, so a replay or a
  redelivered webhook never upserts twice, and Insider partial failures fail only those users.
  (Settled here, apart, they doubled Insider's requests: each sink sent its own, half-full.)
- A timer polls the MAAC topic report of the event ids this worker sent with recently and
  publishes changed click/open counts to `maac.results` as `report.clicks` (campaign level).

Config: `MAAC_REPORT_POLL_S` (default 300; 0 turns the poller off), `MAAC_REPORT_MAX_AGE_S`
(default 259200: event ids used within 3 days are polled).
"""

from __future__ import annotations

import os
import time

import structlog

from app import logs, metrics
from app.agents.context import Relay, bind_event
from app.bundles import BUNDLES_PER_BATCH
from app.config import ConfigError
from app.delivery.core import HttpSender
from app.destinations import maac
from app.destinations.base import HttpRequest
from app.feedback import (
    SendMemory,
    due_event_ids,
    from_outcome,
    from_result,
    is_feedback,
    report_counts,
    report_record,
    report_window,
)
from app.pipeline import origin_of
from app.routing import plan

log = structlog.get_logger(__name__)


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative")
    return value


def install(relay: Relay) -> None:
    settings = relay.settings
    poll_s = _number("MAAC_REPORT_POLL_S", 300.0)
    max_age_s = _number("MAAC_REPORT_MAX_AGE_S", 3 * 86400.0)
    maac_config = settings.destination("maac")
    memory = SendMemory()

    async def publish(record: dict) -> None:
        metrics.FEEDBACK_RECORDS.labels(record["type"]).inc()
        await relay.send("feedback.insider", record["customer_key"], record)

    async def on_outcome(destination: str, outcome, final_status: str) -> None:
        if destination != "maac":
            return
        record = from_outcome(outcome, final_status,
                              maac.event_id_of(outcome.delivery, maac_config.base_url))
        if record is None:
            return
        if record["type"] == "line.sent":
            memory.remember(record)
        await publish(record)

    relay.outcome_hooks.append(on_outcome)

    async def tap(envelopes: list[dict]) -> None:
        for env in envelopes:
            record = from_result(env, memory)
            if record is not None:
                await publish(record)
            elif env["type"] == "line.opened":
                metrics.FEEDBACK_UNMATCHED.labels(env["type"]).inc()

    relay.ingress_taps.setdefault("maac.results", []).append(tap)

    async def plan_one(record, env: dict) -> list[dict]:
        logs.bind_event(env)
        planned = plan(relay.rules, env) if is_feedback(env) else []
        for delivery in planned:
            metrics.ROUTED.labels(delivery["destination"], delivery["action"]).inc()
        await relay.emit("route", "routed",
                         origin=origin_of(record.topic, record.partition, record.offset),
                         event_id=env["event_id"],
                         parent_event_id=(env.get("trace") or {}).get("parent_event_id"),
                         deliveries=[[d["destination"], d["action"], d["delivery_id"]]
                                     for d in planned])
        return planned

    @relay.batch_agent(relay.topic("feedback.insider"), name="feedback-insider",
                       max_records=BUNDLES_PER_BATCH)
    async def feedback_route(batches):
        async for records in batches:
            async for part, record in records.each():
                bind_event(part.event)
                for item in await relay.items_of("feedback", record):
                    try:
                        planned = await plan_one(item, item.doc)
                    except Exception as exc:  # a bug must not stop the stream or lose the record
                        await relay.internal_error("feedback", item, exc)
                        continue
                    for delivery in planned:
                        await relay.send(f"deliveries.{delivery['destination']}", item.key,
                                         delivery)

    if poll_s > 0 and maac_config.base_url:
        state: dict = {"sender": None, "last": {}}

        @relay.app.timer(poll_s, name="maac-report-poller")
        async def poll_reports() -> None:
            await poll_once(relay, state, max_age_s)


async def poll_once(relay: Relay, state: dict, max_age_s: float) -> int:
    """Poll the topic report of recently used event ids; publish changed counts. Returns the
    number of records published."""
    if state["sender"] is None:
        state["sender"] = HttpSender(maac.DESTINATION, relay.settings.destination("maac"),
                                     relay.settings)
    now = time.time()
    start, end = report_window(now, int(max_age_s // 86400) or 1)
    published = 0
    for event_id in due_event_ids(maac.RECENT_EVENTS, now, max_age_s):
        reply = await state["sender"].send(HttpRequest(
            "GET", f"/openapi/v1/event/{event_id}/report/",
            params={"start_date": start, "end_date": end}))
        counts = report_counts(reply.body) if reply.ok else None
        if counts is None:
            metrics.REPORT_POLLS.labels("error").inc()
            continue
        if state["last"].get(event_id) == counts:
            metrics.REPORT_POLLS.labels("unchanged").inc()
            continue
        state["last"][event_id] = counts
        metrics.REPORT_POLLS.labels("changed").inc()
        record = report_record(event_id, counts, start, end, now)
        await relay.send("maac.results", str(event_id), record,
                         headers=[("CrescLab-Idempotency-Key",
                                   record["idempotency_key"].encode())])
        published += 1
    return published
