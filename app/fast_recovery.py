"""Fast table recovery: restore changelogs with one plain aiokafka consumer before Faust does.

Why: Faust restores a changelog through its stream machinery, a task and a future per record:
about 3,000 records/s on this machine, so the ~4,000,000 changelog records of 1,000,000
profiles (a profile plus its index entries) took more than 20 minutes to recover. A plain
consumer reads the same records at ~60,000/s.

How: once Faust's recovery has worked out, per active changelog partition, the last offset it
already holds and the last offset in the log, every partition at least `FAST_RECOVERY_MIN` records
behind is read here and applied in batches with `Table.apply_changelog_batch`, the method
Faust's own recovery uses (RocksDB stores persist the applied offset in the same step), and
Faust's recovery offset moves to the last record applied. Faust then reads only what is left
and completes as usual (callbacks, stream resume).

Safety: an offset only moves past records already applied, so an interrupted load (a new
rebalance, a stalled fetch) leaves the remainder to Faust's own path: slower, never
incomplete. Faust's 90 s time-out on this recovery step is lifted for it (a million profiles
take longer); the load stops by itself after STALL_S without records.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import structlog

log = structlog.get_logger(__name__)

MIN_BEHIND = 10_000          # below this, Faust's own recovery is quick enough
BATCH_RECORDS = 20_000       # records per apply: bounded memory and event-loop pauses
STALL_S = 10.0               # no record for this long: leave the rest to Faust
LOAD_LIMIT_S = 3600.0        # a last guard; stalls end a load long before


class ChangelogEvent:
    """What `apply_changelog_batch` reads from a Faust event: the message, key and value."""

    __slots__ = ("message", "key", "value")

    def __init__(self, message: Any, key: Any, value: Any) -> None:
        self.message, self.key, self.value = message, key, value


def partitions_to_load(tps: Iterable, offsets: Mapping, highwaters: Mapping,
                       min_behind: int = MIN_BEHIND) -> dict:
    """{tp: last offset held} for the partitions far enough behind their log end."""
    chosen = {}
    for tp in tps:
        high, held = highwaters.get(tp), offsets.get(tp)
        held = -1 if held is None else held
        if high is not None and high - held >= min_behind:
            chosen[tp] = held
    return chosen


def to_events(app: Any, table: Any, records: Iterable, tp: Any) -> list[ChangelogEvent]:
    """Faust messages and events for aiokafka records. Keys and values are decoded with the
    changelog topic's schema only for stores that read them (memory); RocksDB stores write
    the raw bytes."""
    from faust.types import Message

    decode = not hasattr(table.data, "_db_for_partition")
    schema = table.changelog_topic.schema
    loads_key, loads_value = app.serializers.loads_key, app.serializers.loads_value
    events = []
    for r in records:
        message = Message(r.topic, r.partition, r.offset, r.timestamp / 1000.0,
                          r.timestamp_type, r.headers, r.key, r.value, None, tp=tp)
        key = value = None
        if decode:
            key = schema.loads_key(app, message, loads=loads_key)
            if r.value is not None:
                value = schema.loads_value(app, message, loads=loads_value)
        events.append(ChangelogEvent(message, key, value))
    return events


async def load_changelogs(app: Any, tp_to_table: Mapping, offsets: MutableMapping,
                          highwaters: Mapping, servers: list[str], budget_s: float,
                          min_behind: int = MIN_BEHIND) -> int:
    """Apply what the active changelog partitions lack, up to their highwater, within
    `budget_s`; advance `offsets` (Faust's recovery offsets) as batches are applied. Returns
    the number of records applied."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from faust.types import TP

    todo = partitions_to_load(tp_to_table, offsets, highwaters, min_behind)
    if not todo:
        return 0
    started = time.monotonic()
    deadline = started + budget_s
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers, enable_auto_commit=False, group_id=None,
        fetch_max_bytes=32 * 1024 * 1024, max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_wait_ms=100)
    applied = 0
    try:
        await consumer.start()
        consumer.assign([TopicPartition(tp.topic, tp.partition) for tp in todo])
        for tp, held in todo.items():
            consumer.seek(TopicPartition(tp.topic, tp.partition), held + 1)
        remaining, last_record = set(todo), time.monotonic()
        while remaining and time.monotonic() < deadline:
            fetched = await consumer.getmany(timeout_ms=500, max_records=BATCH_RECORDS)
            if not fetched and time.monotonic() - last_record > STALL_S:
                break
            for ktp, records in fetched.items():
                tp = TP(ktp.topic, ktp.partition)
                high = highwaters[tp]
                records = [r for r in records if offsets[tp] < r.offset <= high]
                if records:
                    last_record = time.monotonic()
                    table = tp_to_table[tp]
                    table.apply_changelog_batch(to_events(app, table, records, tp))
                    offsets[tp] = records[-1].offset
                    applied += len(records)
                if offsets[tp] >= high and tp in remaining:
                    remaining.discard(tp)
                    consumer.pause(ktp)
    finally:
        await consumer.stop()
    log.info("recovery.fast_load", records=applied, partitions=len(todo),
             seconds=round(time.monotonic() - started, 1),
             unfinished=len([tp for tp in todo if offsets[tp] < highwaters[tp]]))
    return applied


def install() -> None:
    """Run `load_changelogs` right after Faust's recovery computed its active offsets."""
    from faust.tables import recovery
    from faust.transport.drivers.aiokafka import server_list

    cls = recovery.Recovery
    if getattr(cls, "_relay_fast_recovery", False):
        return
    original = cls._build_offsets

    async def _build_offsets(self: Any, consumer: Any, tps: set, destination: Any,
                             title: str) -> None:
        await original(self, consumer, tps, destination, title)
        app = self.app
        relay = getattr(app, "relay", None)
        min_behind = relay.settings.fast_recovery_min if relay else MIN_BEHIND
        if title != "active" or not tps or min_behind <= 0:
            return
        servers = server_list(app.conf.broker, 9092)
        await load_changelogs(app, {tp: self.tp_to_table[tp] for tp in tps},
                              destination, self.active_highwaters, servers, LOAD_LIMIT_S,
                              min_behind)

    async def _wait(self: Any, coro: Any, timeout: Any = None) -> None:
        # Faust bounds this step by broker_request_timeout (90 s) and then cancels it; a large
        # restore needs longer. The load ends on its own when it stalls, and a new rebalance
        # still interrupts it.
        if getattr(coro, "cr_code", None) is _build_offsets.__code__:
            timeout = None
        await original_wait(self, coro, timeout=timeout)

    original_wait = cls._wait
    cls._build_offsets = _build_offsets
    cls._wait = _wait
    cls._relay_fast_recovery = True
