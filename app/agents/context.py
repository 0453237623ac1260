"""What every stage shares: the app, settings, catalog topics, tables and small helpers."""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
import structlog
from faust.stores.memory import Store as MemoryStore
from faust.streams import _current_event, current_event
from faust.types import TP

from app import bundles, metrics, rocksdb_store
from app.batches import Batch
from app.bundles import Bundler, Item
from app.catalog import TopicSpec
from app.config import Settings
from app.envelope import Rejected
from app.pipeline import ingress_dead_letter, origin_of, outcome_record
from app.rocksdb_budget import Budget
from app.routing import Rule
from app.table_bundles import BundledTable, TableBundler

log = structlog.get_logger(__name__)

# Outcomes per relay.outcomes record at most (~200 bytes each), and how long one may wait for
# the rest of its batch when the producer is not flushed sooner.
OUTCOME_BATCH_MAX = 500
OUTCOME_WAIT_S = 0.05
# How long items wait in a bundle for more before a batch's end sends it (the timer sends it
# after OUTCOME_WAIT_S, a commit at once).
BATCH_LINGER_S = 0.01


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
    # app.agents.identity: `await resolve(envelope)` takes a normalized envelope on (ingress),
    # `await bind(identifier key, claim)` records a profile's identifier (route)
    resolve: Callable[[dict], Awaitable[None]] | None = None
    bind: Callable[[str, dict], Awaitable[None]] | None = None
    # app.agents.route: `await to_profiles(profile id, doc, raw=None, op=None)` hands a record
    # to the route stage (`identity.profiles`, or run here: app/agents/shortcut.py); `raw` is
    # the doc's JSON when the caller has it, `op` the record's identity-op header
    to_profiles: Callable[..., Awaitable[None]] | None = None
    # Ingress topic -> `await tap(envelopes)` for each record's envelopes, before they go on
    # (e.g. maac.results -> LINE feedback): a second reader of the record without a second parse.
    ingress_taps: dict[str, list[Callable[[list[dict]], Awaitable[None]]]] = field(
        default_factory=dict)
    _topics: dict[str, faust.TopicT] = field(default_factory=dict)
    _rocksdb: Budget | None = None
    _outcomes: list[dict[str, Any]] = field(default_factory=list)  # for relay.outcomes (emit)
    _bundler: Bundler | None = None  # items of bundled topics not yet sent (app.bundles)
    _table_bundler: TableBundler | None = None  # writes of bundled tables (app.table_bundles)
    _partitions: dict[str, int] = field(default_factory=dict)

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

    def table(self, name: str, bundled: bool = False, **kwargs: Any):
        """The app's table `name` (made on first use); `bundled`: its changelog takes many
        writes per record (app/table_bundles.py)."""
        if name not in self.tables:
            if self.settings.store.startswith("rocksdb"):
                kwargs.setdefault("store", rocksdb_store.url(name))
            if bundled:
                table = self.app.tables.add(BundledTable(
                    self.app, name=name, default=None, beacon=self.app.tables.beacon,
                    partitions=self.settings.partitions, key_type=str, **kwargs))
            else:
                table = self.app.Table(name, default=None, partitions=self.settings.partitions,
                                       key_type=str, **kwargs)
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
        spec = self.catalog.get(topic)
        if spec is not None and spec.bundled:
            bundler = self.bundler()
            future = bundler.add(topic, key, raw, headers)
            if bundler.full():
                await bundler.flush()
            return future
        # Straight to the producer: Faust's Topic.send wraps every record in a FutureMessage with
        # callbacks (~280 us of CPU against ~86 us, measured in isolation). The partitioner is
        # the same, and Faust flushes this producer before it commits offsets.
        return await self.app.producer.send(topic, key, raw, None, None, headers)

    def bundler(self) -> Bundler:
        if self._bundler is None:
            self._bundler = Bundler(self._send_bundle, self.partition_of)
        return self._bundler

    async def _send_bundle(self, topic: str, partition: int, value: bytes) -> Awaitable[Any]:
        return await self.app.producer.send(topic, None, value, partition, None, None)

    def partition_of(self, topic: str, key: bytes) -> int:
        """The partition the producer would pick for `key` (Kafka's default partitioner), from
        the broker's partition count once the producer knows it, else the catalog's."""
        count = self._partitions.get(topic)
        if count is None:
            known = producer_partitions(self.app, topic)
            count = len(known) if known else self.catalog[topic].partitions
            if known:
                self._partitions[topic] = count
        return self._hash_of(key) % count

    @functools.cached_property
    def _hash_of(self) -> Callable[[bytes], int]:
        # looked up once: Faust's settings answer each attribute through a registry (~1.5 % of
        # the route stage when read per send)
        return self.app.conf.producer_partitioner.hash_of

    async def flush_buffers(self, linger_s: float = 0.0) -> None:
        """Send what waits in bundles, bundled table writes and outcome batches to the
        producer; `linger_s`: only the bundles whose oldest item has waited that long."""
        for gatherer in (self._bundler, self._table_bundler):
            if gatherer is not None and gatherer.pending and gatherer.waited() >= linger_s:
                await gatherer.flush()
        await self.write_outcomes()

    async def flush_after_batch(self) -> None:
        """What an agent's batch left buffered, once it has waited BATCH_LINGER_S: every agent
        ends batches often, and a flush after each one cut bundles so small that their records
        cost more than the items (three times the records once ingress routed events itself)."""
        await self.flush_buffers(BATCH_LINGER_S)

    async def put(self, table: Any, key: Any, value: Any) -> asyncio.Future:
        """`table[key] = value` with its changelog record handed straight to the producer;
        returns the future of that record's acknowledgement.

        Faust's own write queues a FutureMessage in its producer buffer, drained by one task
        at ~40 us per record: under load the buffer held seconds of table writes, and a sink
        waiting for its write-ahead entry waited behind all of them (20-290 ms per batch,
        measured). The bytes are Faust's own (its changelog topic's serializers), the
        partition the current event's (as Faust's), and the offset persisted the same way
        (RocksDB keeps it to recover only what it misses). A bundled table's write waits in
        its partition's bundle until the next flush (app/table_bundles.py)."""
        event = current_event()
        if event is None:
            raise RuntimeError("a table write needs a current event (its partition)")
        partition = event.message.partition
        store = table.data
        written = store.write(key, value) if type(store) is rocksdb_store.Store else None
        if written is None:
            store[key] = value
        if getattr(table, "bundled", False):
            tables = self.table_bundler()
            future = tables.add(table, partition, key, value, written and written[1])
            if tables.full():
                await tables.flush()
            return future
        if written is None:
            changelog = table.changelog_topic
            written = (changelog.prepare_key(key, table.key_serializer)[0],
                       changelog.prepare_value(value, table.value_serializer)[0])
        return await self._send_changelog(table, partition, *written)

    def table_bundler(self) -> TableBundler:
        if self._table_bundler is None:
            self._table_bundler = TableBundler(self._send_changelog)
        return self._table_bundler

    async def flush_tables(self) -> None:
        """Send the pending writes of bundled tables (their `put` futures then settle)."""
        if self._table_bundler is not None and self._table_bundler.pending:
            await self._table_bundler.flush()

    async def _send_changelog(self, table: Any, partition: int, raw_key: bytes,
                              raw_value: bytes) -> asyncio.Future:
        topic = table.changelog_topic.get_topic_name()
        future = await self.app.producer.send(topic, raw_key, raw_value, partition, None, None)
        store = table.data
        if type(store).set_persisted_offset is not MemoryStore.set_persisted_offset:
            tp = TP(topic, partition)

            def persist(done: asyncio.Future) -> None:
                if not done.cancelled() and done.exception() is None:
                    store.set_persisted_offset(tp, done.result().offset)

            future.add_done_callback(persist)
        return future

    async def emit(self, stage: str, status: str, **fields: Any) -> None:
        """An accounting record for relay.outcomes (see app.accounting), written in batches."""
        if not self.settings.emit_outcomes:
            return
        self._outcomes.append(outcome_record(stage, status, **fields))
        if len(self._outcomes) >= OUTCOME_BATCH_MAX:
            await self.write_outcomes()

    async def write_outcomes(self) -> None:
        """Write the outcomes gathered so far as one record: one record per outcome was a
        third of everything the relay wrote (4.8 records per event)."""
        if self._outcomes:
            batch, self._outcomes = self._outcomes, []
            await self.send("relay.outcomes", None, {"batch": batch})

    def install_buffer_writers(self) -> None:
        """No bundle item or outcome waits more than OUTCOME_WAIT_S to be sent, and none is left
        behind by a commit (`flush_buffers_before_producer_flush`)."""
        @self.app.timer(OUTCOME_WAIT_S, name="buffer-writer")
        async def buffer_writer() -> None:
            await self.flush_buffers()

        self.flush_buffers_before_producer_flush()

    def flush_buffers_before_producer_flush(self) -> None:
        """Faust flushes the producer before it commits offsets (and on a rebalance or a stop):
        what waits in bundles and outcome batches goes first, so a crash can repeat an item or
        an outcome, never lose one."""
        producer = self.app.producer
        flush = producer.flush

        async def write_then_flush() -> None:
            await self.flush_buffers()
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

    async def items_of(self, stage: str, record: Any) -> list[Item]:
        """The items a record of a bundled topic carries (app.bundles); a record that is not
        JSON is dead-lettered (`internal_error`) instead of stopping its batch."""
        return await self._decoded(stage, record, bundles.items)

    async def _decoded(self, stage: str, record: Any, decode: Callable[[Any], list]) -> list:
        try:
            return decode(record)
        except orjson.JSONDecodeError as exc:
            await self.internal_error(stage, record, exc)
            return []

    async def parsed(self, stage: str, batch: Batch) -> list[tuple[Any, Any]]:
        """(partition event, item document) for each item of a batch of a bundled topic; only
        the documents, without an `Item` each (a record that is not JSON is dead-lettered)."""
        out = []
        for part, record in batch.records():
            event = part.event
            out += [(event, doc) for doc in await self._decoded(stage, record, _docs_of)]
        return out


def _docs_of(record: Any) -> list:
    return bundles.docs(record.value)


def read(table: Any, key: Any) -> Any:
    """`table.get(key)` for tables made with `default=None` (all of the relay's), from the store
    itself: Faust's Table.get calls its sensors and raises and catches a KeyError for a missing
    key (0.87 us against 0.35 us a lookup, several per event)."""
    return table.data.get(key)


def producer_partitions(app: faust.App, topic: str) -> set[int] | None:
    """The partitions of `topic` in the producer's metadata (None until it has fetched them)."""
    producer = getattr(app.producer, "_producer", None)
    cluster = getattr(getattr(producer, "client", None), "cluster", None)
    return cluster.partitions_for_topic(topic) if cluster is not None else None


def bind_event(event, _set=_current_event.set, _ref=weakref.ref) -> Any:
    """Make `event` Faust's current event, as stream iteration does for one event at a time.

    Batched iteration (`take_events`) leaves no current event, yet table reads and writes need
    one to pick the partition (and the RocksDB instance); this is the one place that knows.
    Several calls per event: the names are bound once (an import per call cost 0.8 us)."""
    return _set(_ref(event))


def restore_event(token: Any) -> None:
    """Undo the `bind_event` that returned `token`: the event current before it is back."""
    _current_event.reset(token)
