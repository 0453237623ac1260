"""What every stage shares: the app, settings, catalog topics, tables and small helpers."""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
import structlog

from app import metrics
from app.batches import Batch
from app.catalog import TopicSpec
from app.config import Settings
from app.envelope import Rejected
from app.pipeline import ingress_dead_letter, origin_of, outcome_record
from app.rocksdb_budget import Budget
from app.routing import Rule

log = structlog.get_logger(__name__)

# Outcomes per relay.outcomes record at most (~200 bytes each), and how long one may wait for
# the rest of its batch when the producer is not flushed sooner.
OUTCOME_BATCH_MAX = 500
OUTCOME_WAIT_S = 0.05


@dataclass
class Relay:
    app: faust.App
    settings: Settings
    catalog: dict[str, TopicSpec]
    rules: list[Rule]
    trace_ids: bool = False
    tables: dict[str, Any] = field(default_factory=dict)
    # Called as `await hook(destination, outcome, final_status)` after a sink records an outcome
    # (e.g. LINE results -> feedback.insider); hooks run in the delivery's event context.
    outcome_hooks: list[Callable[[str, Any, str], Awaitable[None]]] = field(default_factory=list)
    shortcut: Any = None  # app.agents.shortcut.Shortcut: how ingress forwards an envelope
    # Ingress topic -> `await tap(envelopes)` for each record's envelopes, before they go on
    # (e.g. maac.results -> LINE feedback): a second reader of the record without a second parse.
    ingress_taps: dict[str, list[Callable[[list[dict]], Awaitable[None]]]] = field(
        default_factory=dict)
    _topics: dict[str, faust.TopicT] = field(default_factory=dict)
    _rocksdb: Budget | None = None
    _outcomes: list[dict[str, Any]] | None = None  # gathered for relay.outcomes (see emit)

    def topic(self, name: str) -> faust.TopicT:
        """A catalog topic with raw bytes keys and values (we encode with orjson)."""
        if name not in self._topics:
            spec = self.catalog[name]
            self._topics[name] = self.app.topic(
                name, partitions=spec.partitions, key_serializer="raw", value_serializer="raw")
        return self._topics[name]

    def batch_agent(self, topic: faust.TopicT, name: str, **kwargs: Any):
        """Decorator: an agent that gets `topic`'s records a fetch at a time (app.batches)."""
        return self.app.batch_agents.agent(topic, name, **kwargs)

    def table(self, name: str, **kwargs: Any):
        if name not in self.tables:
            table = self.app.Table(
                name, default=None, partitions=self.settings.partitions, key_type=str, **kwargs)
            if self.settings.store.startswith("rocksdb"):
                self.rocksdb_budget().attach(table)
            self.tables[name] = table
        return self.tables[name]

    def rocksdb_budget(self) -> Budget:
        if self._rocksdb is None:
            self._rocksdb = budget = Budget(self.settings.rocksdb_write_buffer_mb,
                                            self.settings.rocksdb_block_cache_mb)
            for kind, meter in budget.meters().items():
                metrics.ROCKSDB_MEMORY.labels(kind).set_function(meter)
        return self._rocksdb

    async def send(self, topic: str, key: bytes | str | None, value: Any,
                   headers: Any = None) -> Awaitable[Any]:
        """Hand a record to the producer; returns the future of its acknowledgement."""
        if isinstance(key, str):
            key = key.encode()
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        # Straight to the producer: Faust's Topic.send wraps every record in a FutureMessage with
        # callbacks (~280 us of CPU against ~86 us, measured in isolation). The partitioner is
        # the same, and Faust flushes this producer before it commits offsets.
        return await self.app.producer.send(topic, key, raw, None, None, headers)

    async def emit(self, stage: str, status: str, **fields: Any) -> None:
        """An accounting record for relay.outcomes (see app.accounting), written in batches."""
        if not self.settings.emit_outcomes:
            return
        if self._outcomes is None:
            self._outcomes = []
            self._write_outcomes_before_flush()
        self._outcomes.append(outcome_record(stage, status, **fields))
        if len(self._outcomes) >= OUTCOME_BATCH_MAX:
            await self.write_outcomes()

    async def write_outcomes(self) -> None:
        """Write the outcomes gathered so far as one record: one record per outcome was a
        third of everything the relay wrote (4.8 records per event)."""
        if self._outcomes:
            batch, self._outcomes = self._outcomes, []
            await self.send("relay.outcomes", None, {"batch": batch})

    def install_outcome_writer(self) -> None:
        """No outcome waits more than OUTCOME_WAIT_S for the rest of its batch."""
        @self.app.timer(OUTCOME_WAIT_S, name="outcome-writer")
        async def outcome_writer() -> None:
            await self.write_outcomes()

    def _write_outcomes_before_flush(self) -> None:
        """Faust flushes the producer before it commits offsets (and on a rebalance or a stop):
        the outcomes of the events it commits are written first, so a crash can repeat an
        outcome, never lose one."""
        producer = self.app.producer
        flush = producer.flush

        async def write_then_flush() -> None:
            await self.write_outcomes()
            await flush()

        producer.flush = write_then_flush

    async def internal_error(self, stage: str, record, exc: Exception) -> None:
        """A bug met on one record (an aiokafka record or a Faust message: both carry topic,
        partition, offset, key, value and headers): dead-letter it with the reason, keep going."""
        origin = origin_of(record.topic, record.partition, record.offset)
        log.exception(f"{stage}.internal_error", origin=origin, error=type(exc).__name__)
        rejected = Rejected("internal_error", f"{stage}: {type(exc).__name__}")
        await self.send("ingress.dlq", record.key, ingress_dead_letter(
            rejected, record.topic, record.partition, record.offset, record.key, record.value,
            list(record.headers or [])))
        await self.emit(stage, "dead_lettered", origin=origin, reason="internal_error")

    async def parsed(self, stage: str, batch: Batch) -> list[tuple[Any, Any]]:
        """(partition event, parsed JSON value) for each record of a batch; a record that is not
        JSON is dead-lettered (`internal_error`) instead of stopping the batch."""
        out = []
        for part, record in batch.records():
            try:
                out.append((part.event, orjson.loads(record.value)))
            except orjson.JSONDecodeError as exc:
                await self.internal_error(stage, record, exc)
        return out


def durable_set(table: Any, key: Any, value: Any) -> Any:
    """`table[key] = value`, returning the future of its changelog record (Faust's own write
    drops it), so that a caller can wait for this one write to reach the broker."""
    from faust.streams import current_event

    event = current_event()
    if event is None:
        raise RuntimeError("a table write needs a current event (its partition)")
    future = table.send_changelog(event.message.partition, key, value)
    table.data[key] = value
    return future


def bind_event(event) -> Any:
    """Make `event` Faust's current event, as stream iteration does for one event at a time.

    Batched iteration (`take_events`) leaves no current event, yet table reads and writes need
    one to pick the partition (and the RocksDB instance); this is the one place that knows."""
    from faust.streams import _current_event

    return _current_event.set(weakref.ref(event))


@contextmanager
def event_bound(event) -> Iterator[None]:
    """`bind_event` for a block only: the event current before comes back after it."""
    from faust.streams import _current_event

    token = bind_event(event)
    try:
        yield
    finally:
        _current_event.reset(token)
