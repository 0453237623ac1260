"""Operator tools: `relay replay` (re-feed a topic range) and `relay dlq` (show, re-drive).

A replay re-publishes records of an ingress topic to the same topic. Event ids are derived from
the upstream ids, so without `--resend` every delivery already made is skipped by the ledger and
only what never arrived is sent; with `--resend` the records carry a header that gives their
deliveries new ids. The time filter reads the events' own `occurred_at` (the broker's timestamps
are append times on the embedded broker, and not what an operator means).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from app.agents.ingress import RESEND_HEADER
from app.broker import true_end_offsets
from app.config import Settings
from app.envelope import Rejected, parse_time
from app.pipeline import TOPIC_SOURCES, normalize_record
from app.routing import load_rules, plan


@dataclass
class ReplaySummary:
    read: int = 0
    selected: int = 0
    sent: int = 0
    unreadable: int = 0
    planned: Counter = field(default_factory=Counter)
    origins: list[str] = field(default_factory=list)  # where the re-published records landed

    def lines(self, dry_run: bool) -> list[str]:
        out = [f"read: {self.read}", f"selected: {self.selected}",
               f"{'would send' if dry_run else 'sent'}: {self.selected if dry_run else self.sent}",
               f"unreadable: {self.unreadable}"]
        out += [f"planned {k}: {v}" for k, v in sorted(self.planned.items())]
        return out


def in_window(occurred_at: str, since: datetime | None, until: datetime | None) -> bool:
    when = parse_time(occurred_at)
    return (since is None or when >= since) and (until is None or when < until)


async def read_range(bootstrap, topic: str, from_offset: int | None):
    """Yield every record of `topic` from `from_offset` (per partition) to the current end."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        await consumer.start()
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer.topics()
            parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            raise ValueError(f"topic {topic} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = await true_end_offsets(bootstrap, await consumer.end_offsets(tps))
        starts = await consumer.beginning_offsets(tps)
        consumer.assign(tps)
        first = {tp: max(starts[tp], from_offset or 0) for tp in tps}
        for tp in tps:
            consumer.seek(tp, first[tp])
        remaining = {tp for tp in tps if first[tp] < ends[tp]}
        total = sum(max(0, ends[tp] - first[tp]) for tp in tps)
        yield total
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=2000)
            for tp, messages in batches.items():
                for message in messages:
                    if message.offset >= ends[tp]:
                        remaining.discard(tp)
                        break
                    yield message
                    if message.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()


async def replay(settings: Settings, bootstrap, topic: str, from_offset: int | None = None,
                 since: datetime | None = None, until: datetime | None = None,
                 dry_run: bool = False, resend: bool = False,
                 show_progress: bool = True) -> ReplaySummary:
    from aiokafka import AIOKafkaProducer

    if topic not in TOPIC_SOURCES:
        raise ValueError(f"{topic} is not an ingress topic ({', '.join(sorted(TOPIC_SOURCES))})")
    rules = load_rules(settings.routes_file) if dry_run else []
    summary = ReplaySummary()
    pending: list[asyncio.Future] = []
    replay_id = uuid.uuid4().hex[:12]
    producer = None if dry_run else AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    progress = Progress(TextColumn("replay {task.fields[topic]}"), BarColumn(),
                        TaskProgressColumn(), TextColumn("{task.completed}/{task.total}"),
                        TextColumn("{task.fields[rate]}/s"), TimeRemainingColumn(),
                        disable=not show_progress, transient=False)
    try:
        if producer:
            await producer.start()
        with progress:
            records = read_range(bootstrap, topic, from_offset)
            total = await anext(records)
            task = progress.add_task("replay", total=total, topic=topic, rate="-")
            async for message in records:
                summary.read += 1
                task_rate = progress.tasks[0].speed
                progress.update(task, advance=1, rate=f"{task_rate:.0f}" if task_rate else "-")
                headers = dict(message.headers or [])
                envelopes = []
                if since or until or dry_run:
                    try:
                        envelopes = normalize_record(topic, message.value, headers, settings)
                    except Rejected:
                        summary.unreadable += 1
                        continue
                    if (since or until) and not any(
                            in_window(e["occurred_at"], since, until) for e in envelopes):
                        continue
                summary.selected += 1
                if dry_run:
                    for env in envelopes:
                        for delivery in plan(rules, env):
                            summary.planned[f"{delivery['destination']}.{delivery['action']}"] += 1
                    continue
                out_headers = [(k, v) for k, v in (message.headers or []) if k != RESEND_HEADER]
                if resend:
                    out_headers.append((RESEND_HEADER, replay_id.encode()))
                pending.append(await producer.send(topic, value=message.value, key=message.key,
                                                   headers=out_headers))
                summary.sent += 1
        if producer:
            await producer.flush()
            metas = await asyncio.gather(*pending)
            summary.origins = [f"{m.topic}/{m.partition}/{m.offset}" for m in metas]
    finally:
        if producer:
            await producer.stop()
    return summary


async def dlq_records(bootstrap, topic: str) -> list[dict[str, Any]]:
    records = []
    gen = read_range(bootstrap, topic, None)
    await anext(gen)
    async for message in gen:
        try:
            records.append(orjson.loads(message.value))
        except orjson.JSONDecodeError:
            continue
    return records


def dlq_summary(records: list[dict[str, Any]], topic: str) -> Counter:
    counts: Counter = Counter()
    for record in records:
        if topic == "ingress.dlq":
            counts[f"{record.get('source', '?')}: {record.get('reason_code', '?')}"] += 1
        else:
            delivery = record.get("delivery") or {}
            reason = str(record.get("reason", "?")).split(":")[0]
            counts[f"{delivery.get('destination', '?')}.{delivery.get('action', '?')}: {reason}"] += 1
    return counts


# Dead letters whose delivery may have reached the destination (app/delivery/core.AMBIGUOUS):
# re-driven only when named with --reason, never by a re-drive of everything.
AMBIGUOUS_PREFIX = "ambiguous_"


def redrive_selection(records: list[dict[str, Any]], topic: str, destination: str | None,
                      reason: str | None) -> list[dict[str, Any]]:
    chosen = []
    for record in records:
        if topic == "ingress.dlq":
            if destination and record.get("source") != destination:
                continue
            if reason and not str(record.get("reason_code", "")).startswith(reason):
                continue
        else:
            delivery = record.get("delivery") or {}
            if destination and delivery.get("destination") != destination:
                continue
            named = str(record.get("reason", ""))
            if reason and not named.startswith(reason):
                continue
            if not reason and named.startswith(AMBIGUOUS_PREFIX):
                continue
        chosen.append(record)
    return chosen


async def redrive(bootstrap, topic: str, chosen: list[dict[str, Any]]) -> int:
    """Send chosen dead letters back: deliveries to their destination topic with a fresh retry
    budget (the ledger does not count a dead letter as done), ingress records to their topic."""
    import base64

    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        await producer.start()
        for record in chosen:
            if topic == "ingress.dlq":
                value = base64.b64decode(record["value"]) if record.get("value") else b""
                key = base64.b64decode(record["key"]) if record.get("key") else None
                headers = [(k, base64.b64decode(v) if v else b"")
                           for k, v in record.get("headers") or []]
                await producer.send(record["topic"], value=value, key=key, headers=headers)
            else:
                delivery = {**record["delivery"], "attempt": 0, "not_before": 0.0,
                            "redrive": True}
                await producer.send(f"deliveries.{delivery['destination']}",
                                    value=orjson.dumps(delivery),
                                    key=(delivery.get("customer_key") or "").encode())
        await producer.flush()
    finally:
        await producer.stop()
    return len(chosen)
