"""Sinks: one agent per destination topic (the main lane) and one per retry topic (the slow lane).

The main lane takes a batch, skips what the ledger says is already done, delivers the rest
through the shared core, and records every outcome (ledger, retry topic, DLQ, relay.outcomes)
before the batch's offsets are acknowledged. What still fails after the in-process attempts goes
to the retry topic, so the main lane never blocks behind one failing item.

Per-customer order: while a customer has an item in the retry lane, their later items for the
same destination are parked behind it in that lane (same key, so same partition, processed in
order). The lane retries its head item in place until it succeeds or is dead-lettered, so an item
never overtakes an earlier one of the same customer.

A destination whose breaker is open (or paused after 401/403) is waited out: its backlog stays
in Kafka and other destinations, with their own agents, are unaffected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import orjson
from faust.streams import current_event

from app import logs, metrics
from app.agents.context import Relay, bind_event, read
from app.batches import in_turns
from app.bundles import BUNDLES_PER_BATCH
from app.config import DESTINATIONS
from app.delivery.core import AFTER_CRASH, AMBIGUOUS, PAUSED, TERMINAL, Deliverer, Outcome
from app.delivery.intents import SENDING, Intents, intent_key
from app.destinations.registry import DESTINATIONS as IMPLEMENTATIONS
from app.destinations.registry import is_idempotent
from app.pipeline import delivery_dead_letter, event_age_s, next_attempt

PARKED_REASON = "behind_earlier_retry"
# A sink settles about this many seconds of deliveries at once (`Pace`; at first, and at most,
# this long at its destination's documented limits): every delivery of a settle is marked in
# flight before the first request, so a crash leaves those still unanswered as
# `ambiguous_after_crash` for an operator.
SETTLE_WINDOW_S = 1.0
MIN_SETTLE = 10
IN_LANE = "in_retry_lane"  # ledger status while the retry lane owns a delivery


class Settler:
    """Delivers batches for one destination and records their outcomes."""

    def __init__(self, relay: Relay, dest: str):
        self.relay = relay
        self.dest = dest
        self.ledger = relay.table("ledger", bundled=True)
        self.intents = Intents(self.ledger, put=self.mark)
        self._marks: list[asyncio.Future] = []  # this batch's write-ahead records in flight
        self._dead_letters: list[tuple] = []  # (event, delivery id, ledger entry, DLQ future)
        self.parked = relay.table("parked")  # "<dest>|<customer key>" -> items in the retry lane
        self.deliverer = Deliverer(IMPLEMENTATIONS[dest], relay.settings, trace_ids=relay.trace_ids)
        self.pace = Pace(settle_size(IMPLEMENTATIONS[dest], self.deliverer.config.rate_scale,
                                     relay.settings.sink_batch_max))
        self._event_age = metrics.EVENT_AGE.labels(dest)

    def settles(self, batch: list[tuple[Any, dict]]) -> Iterator[list[tuple[Any, dict]]]:
        """`batch` cut into runs settled one after the other, each as long as `Pace` allows."""
        start = 0
        while start < len(batch):
            size = self.pace.size()
            yield batch[start:start + size]
            start += size

    def mark(self, key: str, value: dict) -> None:
        """A write-ahead ledger entry for this batch, written by `marks_durable` in the
        partition of the current event."""
        self._marks.append((current_event(), key, value))

    async def marks_durable(self) -> None:
        """Write the batch's write-ahead entries and wait until the broker has them. Only them:
        a producer flush waited for everything every stage had in flight (10-110 ms under load,
        measured). The ledger is bundled (app/table_bundles.py): the marks go in their
        partition's bundle after the outcomes of earlier batches, so those are in before them."""
        marks, self._marks = self._marks, []
        futures = []
        for event, key, value in marks:
            bind_event(event)
            futures.append(await self.relay.put(self.ledger, key, value))
        if futures:
            await self.relay.flush_tables()
            await asyncio.gather(*futures)

    async def dead_letters_durable(self) -> None:
        """Write the ledger statuses of this settle's dead letters once the broker has the
        dead-letter records. A status written first could outlive its record in a crash, and
        the delivery's source record, read again, would be skipped as settled: lost."""
        if not self._dead_letters:
            return
        waiting, self._dead_letters = self._dead_letters, []
        await asyncio.gather(*(future for *_, future in waiting))
        for event, delivery_id, entry, _ in waiting:
            bind_event(event)
            await self.set_status(delivery_id, entry)

    async def set_status(self, delivery_id: str, status: dict) -> None:
        await self.relay.put(self.ledger, delivery_id, status)

    def _lane_key(self, delivery: dict) -> str:
        return f"{self.dest}|{delivery.get('customer_key') or ''}"

    async def _lane_add(self, delivery: dict, n: int) -> None:
        key = self._lane_key(delivery)
        count = max(0, (read(self.parked, key) or 0) + n)
        if count:
            await self.relay.put(self.parked, key, count)
        elif read(self.parked, key) is not None:
            self.parked.pop(key, None)

    async def wait_for_breaker(self) -> None:
        while (wait := self.deliverer.breaker.wait_s()) > 0:
            metrics.BREAKER_STATE.labels(self.dest).set(
                metrics.BREAKER_CODES.get(self.deliverer.breaker.state, 0))
            await asyncio.sleep(min(wait, 1.0))

    async def settle(self, batch: list[tuple[Any, dict]], in_lane: bool = False) -> list[Outcome]:
        """`batch` pairs each delivery with its Kafka event: table reads and writes happen in
        that event's context, so they land in the partition the delivery came from."""
        relay, dest = self.relay, self.dest
        await self.wait_for_breaker()
        todo, event_of, in_flight = [], {}, {}
        to_mark: dict[str, tuple[Any, list[str]]] = {}  # intent key -> (an event, delivery ids)
        last_event = key = None
        async for event, delivery in in_turns(batch):
            bind_event(event)
            delivery_id = delivery["delivery_id"]
            if event is not last_event:  # a batch's deliveries come a partition at a time
                last_event, key = event, intent_key(event.message.topic, event.message.partition)
                if key not in in_flight:
                    in_flight[key] = self.intents.in_flight(key)
            status = (read(self.ledger, delivery_id) or {}).get("status")
            if status is None and delivery_id in in_flight[key]:
                status = SENDING
            settled = status in TERMINAL or (status in AMBIGUOUS and not delivery.get("redrive"))
            if delivery_id in event_of or settled:
                metrics.LEDGER_HITS.labels(dest).inc()
                if in_lane:
                    await self._lane_add(delivery, -1)
                # How it ended, for readers of relay.outcomes: a crash can lose the outcome
                # record of a delivery whose ledger status survived.
                await relay.emit("deliver", "duplicate_skipped", destination=dest,
                                 delivery_id=delivery_id, event_id=delivery["event_id"],
                                 ledger_status=status)
                continue
            event_of[delivery_id] = event
            if status == SENDING and not (relay.settings.resend_idempotent_after_crash
                                          and is_idempotent(dest, delivery.get("action", ""))):
                # Never risk messaging a person twice: an operator decides (relay dlq redrive).
                # Found still `SENDING` after a restart: in flight when the worker died.
                await self.finish(Outcome(delivery, "failed", AFTER_CRASH), in_lane)
                continue
            # A copy of an item the lane holds (a replay) parks behind it rather than being
            # dropped: the lane skips it if the first copy ends, and delivers it if that copy
            # was lost in a crash.
            if not in_lane and (status == IN_LANE or read(self.parked, self._lane_key(delivery))):
                await self.park(delivery)
                continue
            todo.append(delivery)
            if status is None:
                to_mark.setdefault(key, (event, []))[1].append(delivery_id)
            else:
                # Its own mark, replacing the status it has (in the retry lane, or ambiguous and
                # re-driven): a listed delivery that has a status counts as no longer in flight.
                self.mark(delivery_id, {"status": SENDING, "at": time.time()})
        if not todo:
            await self.dead_letters_durable()
            return []
        stamps = self.write_intents(to_mark, in_flight)
        await self.marks_durable()
        metrics.BATCH_SIZE.labels(dest).observe(len(todo))
        logs.bind_event(None, destination=dest, batch_size=len(todo))
        results: list[Outcome] = []
        started = time.monotonic()
        async for chunk in self.deliverer.deliver_chunks(todo):
            async for outcome in in_turns(chunk):
                bind_event(event_of[outcome.delivery_id])
                await self.record(outcome, in_lane)
            results += chunk
        if not in_lane:
            self.pace.observe(len(todo), time.monotonic() - started)
        metrics.BREAKER_STATE.labels(dest).set(
            metrics.BREAKER_CODES.get(self.deliverer.breaker.state, 0))
        await self.dead_letters_durable()
        if len({outcome.delivery_id for outcome in results}) == len(todo):
            for key, stamp in stamps.items():  # every delivery they list has its outcome now
                self.intents.settled(key, stamp)
        # No flush here: outcomes become durable before offsets are committed (Faust flushes
        # first), and the next batch's intent flush carries them too.
        return results

    def write_intents(self, to_mark: dict[str, tuple[Any, list[str]]],
                      in_flight: dict[str, frozenset[str]]) -> dict[str, str]:
        """One write-ahead entry per source partition of the batch (app/delivery/intents.py),
        written in the context of one of its events so it lands in that partition."""
        stamps = {}
        for key, (event, ids) in to_mark.items():
            bind_event(event)
            stamps[key] = self.intents.write(key, ids, in_flight[key])
        return stamps

    async def park(self, delivery: dict) -> None:
        await self._lane_add(delivery, +1)
        await self.set_status(delivery["delivery_id"], {"status": IN_LANE, "at": time.time()})
        await self.relay.send(f"deliveries.retry.{self.dest}", delivery.get("customer_key"),
                              {**delivery, "not_before": 0.0, "last_reason": PARKED_REASON})
        await self.relay.emit("deliver", "retrying", destination=self.dest,
                              action=delivery["action"], delivery_id=delivery["delivery_id"],
                              event_id=delivery["event_id"], reason=PARKED_REASON)

    async def record(self, outcome: Outcome, in_lane: bool) -> None:
        relay, dest = self.relay, self.dest
        delivery, status = outcome.delivery, outcome.status
        logs.bind_event(delivery.get("envelope"), delivery_id=outcome.delivery_id, destination=dest)
        if status == "retry":
            await self.set_status(outcome.delivery_id, {"status": IN_LANE, "at": time.time()})
            if in_lane:
                return  # the lane retries its head in place (see retry agent)
            await self._lane_add(delivery, +1)
            metrics.RETRIES.labels(dest, "topic").inc()
            await relay.send(f"deliveries.retry.{dest}", delivery.get("customer_key"),
                             next_attempt(delivery, relay.settings, outcome.reason,
                                          outcome.retry_after_s))
            await relay.emit("deliver", "retrying", destination=dest, action=delivery["action"],
                             delivery_id=outcome.delivery_id, event_id=delivery["event_id"],
                             reason=outcome.reason)
            return
        await self.finish(outcome, in_lane)

    async def finish(self, outcome: Outcome, in_lane: bool, status: str | None = None) -> None:
        relay, dest = self.relay, self.dest
        delivery = outcome.delivery
        status = status or outcome.status
        key = delivery.get("customer_key") or ""
        dead_letter = None
        if status in ("failed", "dead_lettered", "retry"):
            status = "dead_lettered"
            metrics.DLQ.labels(dest, outcome.reason.split(":")[0][:40]).inc()
            dead_letter = await relay.send("deliveries.dlq", key, delivery_dead_letter(
                delivery, outcome.reason, int(delivery.get("attempt", 0)) + outcome.attempts,
                outcome.detail))
        if in_lane:
            await self._lane_add(delivery, -1)
        # An ambiguous item stays settled for replays; only `relay dlq redrive` sends it again.
        ledger_status = outcome.reason if outcome.reason in AMBIGUOUS else status
        entry = {"status": ledger_status, "at": time.time()}
        if dead_letter is None:
            await self.set_status(outcome.delivery_id, entry)
        else:
            self._dead_letters.append((current_event(), outcome.delivery_id, entry, dead_letter))
        metrics.OUTCOMES.labels(dest, delivery["action"], status).inc()
        if status == "delivered":
            age = event_age_s(delivery.get("envelope") or {})
            if age is not None:
                self._event_age.observe(age)
        await relay.emit("deliver", status, destination=dest, action=delivery["action"],
                         delivery_id=outcome.delivery_id, event_id=delivery["event_id"],
                         reason=outcome.reason)
        for hook in relay.outcome_hooks:
            await hook(dest, outcome, status)

    async def work_lane_item(self, event, delivery: dict) -> None:
        """Retry the head of the lane in place until it ends, keeping the customer's order."""
        settings = self.relay.settings
        logs.bind_event(delivery.get("envelope"), delivery_id=delivery.get("delivery_id"),
                        destination=self.dest)
        while True:
            wait = float(delivery.get("not_before", 0)) - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            results = await self.settle([(event, delivery)], in_lane=True)
            if not results or results[0].status != "retry":
                return
            outcome = results[0]
            budget_left = int(delivery.get("attempt", 0)) < settings.topic_retry_max
            if not budget_left and not outcome.reason.startswith(PAUSED):
                bind_event(event)
                await self.finish(outcome, in_lane=True, status="dead_lettered")
                await self.dead_letters_durable()
                await self.relay.app.producer.flush()
                return
            metrics.RETRIES.labels(self.dest, "topic").inc()
            delivery = next_attempt(delivery, settings, outcome.reason, outcome.retry_after_s,
                                    in_lane=True)


class Pace:
    """How many deliveries a sink settles at once: as many as end within about
    SETTLE_WINDOW_S, at most `ceiling` (`settle_size`). Every delivery of a settle is marked in
    flight until its request's chunk ends, and the documented limits overstate what gets
    through where requests carry one delivery each (MAAC pushes with their own messages) or a
    destination is slow or failing (1,000 MAAC pushes at 170 calls/s are six seconds in
    flight). A settle slower than the window shrinks the next one to what would have fit; a
    quicker one lets it grow, at most doubling (a small settle's time is mostly the round
    trip, not a measure of what a full one takes)."""

    def __init__(self, ceiling: int):
        self.ceiling = ceiling
        self.current = ceiling

    def size(self) -> int:
        return self.current

    def observe(self, deliveries: int, seconds: float) -> None:
        if seconds > SETTLE_WINDOW_S:
            fits = int(deliveries * SETTLE_WINDOW_S / seconds)
            self.current = max(min(MIN_SETTLE, self.ceiling), fits)
        else:
            grown = int(deliveries * min(2.0, SETTLE_WINDOW_S / max(seconds, 1e-3)))
            self.current = min(self.ceiling, max(self.current, grown))


def gathers(destination) -> bool:
    """Whether some of its requests carry several deliveries."""
    return any(action.max_batch > 1 for action in destination.actions.values())


def settle_size(destination, rate_scale: float, batch_max: int) -> int:
    """The most deliveries settled at once: SINK_BATCH_MAX, or about SETTLE_WINDOW_S of what
    the destination's limits let through when that is less."""
    window = int(destination.deliveries_per_s(rate_scale) * SETTLE_WINDOW_S)
    return max(1, min(batch_max, max(MIN_SETTLE, window)))


def limit_share(assigned: Iterable[Any], partitions: Mapping[str, int]) -> float:
    """The share of a destination's limits a worker may use: the share of the destination's
    delivery partitions (`partitions`: topic -> count, its main and retry lanes) assigned to it.
    The destination counts every worker's calls together, and the traffic is split by
    partition; at least one partition's worth, so a worker left without any still gets a
    straggler through."""
    total = sum(partitions.values())
    if not total:
        return 1.0
    owned = sum(1 for tp in assigned if tp.topic in partitions)
    return max(owned, 1) / total


def ingress_behind(relay: Relay) -> Callable[[], bool]:
    """Whether this worker has a backlog: its ingress agent has a quarter of a batch waiting
    (`BatchAgent.backlogged`). Then the sinks of gathering destinations take a batch at most
    every SINK_BEHIND_WINDOW_S, so that under load each request carries what a backlog can
    give it (Insider: up to 1,000 users), not what arrived during the sink's last round trip."""
    agents = relay.app.batch_agents

    def behind() -> bool:
        ingress = agents.named("ingress")
        return ingress is not None and ingress.backlogged()

    return behind


def install(relay: Relay) -> None:
    settlers = {dest: _install_destination(relay, dest) for dest in DESTINATIONS}
    lanes = {dest: {topic: relay.catalog[topic].partitions or relay.settings.partitions
                    for topic in (f"deliveries.{dest}", f"deliveries.retry.{dest}")}
             for dest in settlers}

    @relay.app.on_partitions_assigned.connect
    async def share_limits(_sender: Any, assigned: Any = (), **_kwargs: Any) -> None:
        for dest, settler in settlers.items():
            share = limit_share(assigned, lanes[dest])
            settler.deliverer.sender.set_share(share)
            metrics.LIMIT_SHARE.labels(dest).set(share)


def _install_destination(relay: Relay, dest: str) -> Settler:
    settler = Settler(relay, dest)
    settings = relay.settings
    window_s = settings.batch_window_s(dest, gathers=gathers(IMPLEMENTATIONS[dest]))

    @relay.batch_agent(relay.topic(f"deliveries.{dest}"), name=f"sink-{dest}",
                       max_records=BUNDLES_PER_BATCH, linger_s=window_s,
                       behind_s=settings.sink_behind_window_s if window_s else 0.0,
                       behind=ingress_behind(relay))
    async def sink(batches):
        async for batch in batches:
            deliveries = await relay.parsed(f"sink-{dest}", batch)
            for run in settler.settles(deliveries):
                await settler.settle(run)

    @relay.app.agent(relay.topic(f"deliveries.retry.{dest}"), name=f"retry-{dest}")
    async def retry(stream):
        async for event in stream.events():
            await settler.work_lane_item(event, orjson.loads(event.value))

    return settler
