"""`relay chaos` (and `make chaos`): the proof that nothing is lost and nothing is sent twice.

On the embedded broker and the sandbox, in one run:
1. sample events across every destination while the sandbox fails a share of calls with
   429/500/503 and time-outs;
2. the worker is killed with SIGKILL mid-stream and restarted (`--kills` times);
3. one destination is down for `--outage` seconds while the others keep flowing;
4. a full replay of the ingress topics without `--resend`.

Then it prints `name: value` lines ending with `lost` and `duplicates`:
- lost: planned deliveries (from the route stage's accounting records) that neither reached the
  sandbox nor the dead-letter topic nor ended deliberately (skipped, unreachable), plus ingress
  records that never reached an end;
- duplicates: deliveries the sandbox accepted more than once for the same (destination, event,
  action, rule), except those of idempotent actions (a SessionM tag, Braze attributes, an AIR
  trigger that AIR recognises by reference ...), which the relay may send again after a request
  went unanswered or a crash, and which are reported apart as `idempotent_repeats`.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.accounting import Tracker, outcomes_in
from app.broker import EmbeddedBroker, free_port, true_end_offsets
from app.catalog import bootstrap_of, create_topics, load_catalog
from app.config import Settings
from app.delivery.core import AMBIGUOUS
from app.localstack import (
    TopicPublisher,
    WorkerProcess,
    air_event_key,
    base_env,
    produce,
    read_topic,
)
from app.pipeline import TOPIC_SOURCES
from app.replay import replay
from app.safety.policy import without_quiet_hours
from app.samples import sample_records

DESTINATION_LIMITS_KEY = "rates"


@dataclass
class ChaosConfig:
    events: int = 10_000
    fault_rate: float = 0.3
    timeout_rate: float = 0.01
    kills: int = 2
    outage_s: float = 60.0
    outage_destination: str = "braze"
    replay: bool = True
    seed: int = 11
    deadline_s: float = 1800.0


@dataclass
class Observed:
    routed: dict[str, list] = field(default_factory=dict)
    final: dict[str, str] = field(default_factory=dict)
    retries: int = 0
    ambiguous: dict[str, dict[str, str]] = field(default_factory=dict)  # reason -> id -> dest

    def add(self, record: Any) -> None:
        for outcome in outcomes_in(record):
            self._add_one(outcome)

    def _add_one(self, record: Mapping[str, Any]) -> None:
        if record.get("stage") == "route":
            self.routed[record["event_id"]] = record.get("deliveries") or []
        elif record.get("stage") == "deliver":
            if record.get("status") == "retrying":
                self.retries += 1
            elif record.get("delivery_id"):
                # A copy skipped as a duplicate says nothing about how the delivery itself ended.
                status = record.get("status", "")
                if status == "duplicate_skipped":
                    # the ledger's status: the delivery's own outcome record may have been
                    # lost in a kill after the status was durable
                    self.final.setdefault(record["delivery_id"],
                                          record.get("ledger_status") or status)
                else:
                    self.final[record["delivery_id"]] = status
                if record.get("reason") in AMBIGUOUS:
                    self.ambiguous.setdefault(record["reason"], {})[record["delivery_id"]] = \
                        record.get("destination") or ""

    def planned(self) -> dict[str, str]:
        return {d[2]: d[0] for deliveries in self.routed.values() for d in deliveries}


async def run_chaos(settings: Settings, cfg: ChaosConfig, say=print) -> dict[str, Any]:
    from app.sandbox import Sandbox

    workdir = tempfile.mkdtemp(prefix="relay-chaos-")
    broker = EmbeddedBroker(log_path=os.path.join(workdir, "broker.log"))
    await asyncio.to_thread(broker.start)
    bootstrap = bootstrap_of(broker.url)
    worker: WorkerProcess | None = None
    publisher = TopicPublisher(bootstrap, "air.outbound", key=air_event_key)
    port = free_port()
    sandbox = Sandbox(webhook_url=f"http://127.0.0.1:{port}/webhooks/maac", seed=cfg.seed,
                      air_outbound=publisher, max_calls=20_000)
    tracker, observed, stop = Tracker(), Observed(), asyncio.Event()
    started = time.monotonic()
    say(f"logs in {workdir}")
    try:
        await create_topics(bootstrap, load_catalog(settings))
        await sandbox.start()
        env = base_env(broker.url, sandbox.credentials(), LOG_LEVEL="info",
                       MESSAGING_FILE=without_quiet_hours(settings.messaging_file, os.path.join(
                           workdir, "messaging.yaml")),
                       RETRY_BASE_S="0.05", RETRY_MAX_S="0.5", REQUEST_TIMEOUT_S="2",
                       BREAKER_COOLDOWN_S="3", TOPIC_RETRY_MAX="30")

        def new_worker() -> WorkerProcess:
            return WorkerProcess(env, os.path.join(workdir, "worker"), web_port=port).start()

        worker = new_worker()
        await worker.wait_ready(90)

        async def follow() -> None:
            async for _topic, record in read_topic(bootstrap, ["relay.outcomes"], stop):
                if record:
                    tracker.add(record)
                    observed.add(record)

        follower = asyncio.create_task(follow())
        sandbox.set_faults("*", error_rate=cfg.fault_rate, statuses=[429, 500, 503],
                           timeout_rate=cfg.timeout_rate, timeout_s=4.0)
        chunks = 10
        kill_at = {round(chunks * (i + 1) / (cfg.kills + 1)) for i in range(cfg.kills)}
        per_chunk = max(1, cfg.events // chunks)
        sent = 0
        for chunk in range(chunks):
            n = per_chunk if chunk < chunks - 1 else cfg.events - sent
            records = sample_records(n, seed=cfg.seed * 1000 + chunk,
                                     base_time=datetime.now(UTC))
            tracker.expect(await produce(bootstrap, records))
            sent += n
            if chunk == chunks // 2 and cfg.outage_s:
                sandbox.set_faults(cfg.outage_destination, outage_s=cfg.outage_s)
                say(f"outage: {cfg.outage_destination} for {cfg.outage_s:.0f}s")
            if chunk in kill_at:
                await asyncio.sleep(1.0)  # let it get busy with this chunk
                worker.kill()
                say(f"killed worker (SIGKILL) after {sent} events; restarting")
                worker = new_worker()
                await worker.wait_ready(90)
            await asyncio.sleep(0.3)
        await wait_done(tracker, started + cfg.deadline_s, "first pass", worker, say, bootstrap)
        sandbox.clear_faults()
        if not tracker.done:
            # A replay now would only add records nobody has time to wait for, and count them lost.
            say(f"first pass incomplete at the deadline ({len(tracker.unaccounted())} records "
                "unaccounted); no replay")
        elif cfg.replay:
            replayed = 0
            for topic in TOPIC_SOURCES:
                summary = await replay(settings, bootstrap, topic, show_progress=False)
                tracker.expect(summary.origins)
                replayed += summary.sent
            say(f"replayed {replayed} ingress records without --resend")
            await wait_done(tracker, started + cfg.deadline_s, "replay", worker, say, bootstrap)
        await settle_deliveries(observed, started + cfg.deadline_s)
        await sandbox.drain()
        stop.set()
        await follower
        dlq = await dead_lettered_ids(bootstrap)
        return figures(cfg, tracker, observed, sandbox, dlq, sent, time.monotonic() - started)
    finally:
        stop.set()
        if worker:
            worker.stop()
        await publisher.stop()
        await sandbox.stop()
        broker.stop()


STALL_S = 60.0


async def wait_done(tracker: Tracker, deadline: float, what: str,
                    worker: WorkerProcess | None = None, say=print, bootstrap=None) -> None:
    """Wait until every expected record is accounted for. When nothing moves for `STALL_S`,
    ask the worker for a task dump (SIGUSR2) once and say, per partition, which records are
    missing next to the broker's log end, so a stuck run leaves its explanation."""
    progress, moved_at, dumped = -1, time.monotonic(), False
    while not tracker.done and time.monotonic() < deadline:
        seen = len(tracker.ingress) + len(tracker.final) + len(tracker.routed)
        if seen != progress:
            progress, moved_at = seen, time.monotonic()
        elif not dumped and worker and time.monotonic() - moved_at > STALL_S:
            dumped = worker.dump_tasks()
            say(f"{what}: no progress for {STALL_S:.0f}s; task dump in {worker.log_path}")
            if bootstrap:
                for line in await missing_by_partition(tracker.unaccounted(), bootstrap):
                    say(f"{what}: {line}")
        await asyncio.sleep(0.5)


async def missing_by_partition(origins: list[str], bootstrap) -> list[str]:
    """`topic/partition: N unaccounted from offset O; broker log end E` per partition."""
    from aiokafka import TopicPartition

    by_tp: dict[TopicPartition, list[int]] = {}
    for origin in origins:
        topic, partition, offset = origin.rsplit("/", 2)
        by_tp.setdefault(TopicPartition(topic, int(partition)), []).append(int(offset))
    ends = await true_end_offsets(bootstrap, {tp: 1 for tp in by_tp})
    return [f"{tp.topic}/{tp.partition}: {len(offsets)} unaccounted from offset {min(offsets)}; "
            f"broker log end {ends.get(tp)}" for tp, offsets in sorted(by_tp.items())]


async def settle_deliveries(observed: Observed, deadline: float) -> None:
    """Deliveries born after the last ingress record (webhook results, AIR rewards) end too."""
    quiet_since = time.monotonic()
    last = -1
    while time.monotonic() < deadline:
        pending = [d for d in observed.planned() if d not in observed.final]
        if not pending and time.monotonic() - quiet_since > 3:
            return
        if len(observed.final) != last:
            last, quiet_since = len(observed.final), time.monotonic()
        await asyncio.sleep(0.5)


async def dead_lettered_ids(bootstrap) -> set[str]:
    ids = set()
    async for _topic, record in read_topic(bootstrap, ["deliveries.dlq"], idle_timeout_s=2.0):
        if record:
            ids.add((record.get("delivery") or {}).get("delivery_id"))
    return ids


def figures(cfg: ChaosConfig, tracker: Tracker, observed: Observed, sandbox, dlq: set[str],
            sent: int, elapsed: float) -> dict[str, Any]:
    accepted = sandbox.accepted_ids()
    planned = observed.planned()
    deliberate = {"skipped", "unreachable", "suppressed"}
    lost_deliveries = [d for d in planned if d not in accepted and d not in dlq
                       and observed.final.get(d) not in deliberate]
    repeats = {d: n for d, n in accepted.items() if n > 1}
    harmless = {d for d in repeats if is_idempotent(d)}
    by_destination = Counter(planned.values())
    stats = sandbox.stats()
    out: dict[str, Any] = {
        "events_sent": sent,
        "ingress_records_accounted": len(tracker.expected) - len(tracker.unaccounted()),
        "ingress_dead_letters": tracker.ingress_dlq,
        "deliveries_planned": len(planned),
        "deliveries_accepted": sum(1 for d in planned if d in accepted),
        "retries": observed.retries,
        "dead_letters": len(dlq),
        **{reason: len(observed.ambiguous.get(reason, {})) for reason in AMBIGUOUS},
        **{f"{reason}_{dest}": n for reason in AMBIGUOUS
           for dest, n in sorted(Counter(observed.ambiguous.get(reason, {}).values()).items())},
        "idempotent_repeats": len(harmless),
        "elapsed_s": round(elapsed, 1),
    }
    for dest, count in sorted(by_destination.items()):
        out[f"planned_{dest}"] = count
        for name, rate in (stats.get(dest, {}).get(DESTINATION_LIMITS_KEY) or {}).items():
            if rate.get("limit_per_s") and rate.get("max_per_s"):
                out[f"max_rate_{dest}_{name}"] = (
                    f"{rate['max_per_s']:.0f} of {rate['limit_per_s']:.0f} per s")
    out["lost"] = len(lost_deliveries) + len(tracker.unaccounted())
    out["duplicates"] = len(repeats) - len(harmless)
    out["_lost_examples"] = ([f"{d} ({observed.final.get(d)})" for d in lost_deliveries[:5]]
                             + tracker.unaccounted()[:5])
    out["_duplicate_examples"] = [d for d in repeats if d not in harmless][:5]
    return out


def is_idempotent(delivery_id: str) -> bool:
    """Whether the action of a delivery id (`<destination>:<action>:<event id>[:<rule>]`) is
    one that may be sent twice without effect."""
    from app.destinations import registry

    destination, _, rest = delivery_id.partition(":")
    return registry.is_idempotent(destination, rest.partition(":")[0])
