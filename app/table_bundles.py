"""Bundled tables: many writes of a table to one changelog record.

The sinks' ledger took about two changelog records per event (a status per delivery, a
write-ahead entry per partition and settle), more than any topic the relay writes, and each
record costs its producer call, its share of the produce request and the broker's append
whatever its size. A bundled table (`BundledTable`) is written through `Relay.put` like any
other: the store at once, and the changelog through `TableBundler`, which gathers the writes of
each changelog partition until the next flush and sends them as one record::

    key:   "~bundle:<writer>:<n>"   (unique: compaction never drops a bundle for a later one)
    value: {"bundle": [[key, value], ...]}   (the writes in the order they were made)

A flush happens where the topic bundles are flushed (`Relay.flush_buffers`: after every batch,
on a timer, and before the producer flush that precedes every offset commit), so a write is in
the log before the offsets of whatever caused it are committed; and where a caller waits for
its writes to be durable (the sinks' write-ahead marks), by `TableBundler.flush` then the
futures `Relay.put` returned. One partition's bundles are sent in order, and a bundle keeps the
order of its writes, so the changelog holds a partition's writes in the order they were made.

Recovery goes through `apply_changelog_batch`, the method both Faust's recovery and
`app.fast_recovery` call: a bundle is expanded into the writes it holds, encoded as Faust
encodes them, so either store (memory or RocksDB) applies ordinary changelog events. A record
that is not a bundle (a worker from before bundles) is applied as it is.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import faust
import orjson

from app.bundles import Gatherer

PREFIX = "~bundle:"  # no ledger key starts so: delivery ids are "<destination>:...", marks "sending|"
BUNDLE = "bundle"


class _Message:
    """The part of a Faust message the stores read when they apply a changelog event."""

    __slots__ = ("topic", "partition", "offset", "tp", "key", "value")

    def __init__(self, like: Any, key: bytes, value: bytes | None):
        self.topic, self.partition, self.offset = like.topic, like.partition, like.offset
        self.tp, self.key, self.value = like.tp, key, value


class _Write:
    """One write of a bundle, shaped like a changelog event (decoded key and value, raw message)."""

    __slots__ = ("message", "key", "value")

    def __init__(self, message: _Message, key: Any, value: Any):
        self.message, self.key, self.value = message, key, value


class BundledTable(faust.Table):
    """A table whose changelog may hold bundles of writes (see the module docstring). Keys and
    values must be JSON (the table's default serializers)."""

    bundled = True

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        super().apply_changelog_batch(list(self.expanded(batch)))

    def expanded(self, batch: Iterable[Any]) -> Iterator[Any]:
        """The events of `batch`, each bundle replaced by the writes it holds."""
        raw_prefix = self.raw_key(PREFIX)[:-1]  # the JSON string without its closing quote
        for event in batch:
            message = event.message
            if not (isinstance(message.key, bytes) and message.key.startswith(raw_prefix)
                    and message.value is not None):
                yield event
                continue
            for key, value in orjson.loads(message.value)[BUNDLE]:
                yield _Write(_Message(message, self.raw_key(key), self.raw_value(value)),
                             key, value)

    def raw_key(self, key: Any) -> bytes:
        return self.changelog_topic.prepare_key(key, self.key_serializer)[0]

    def raw_value(self, value: Any) -> bytes:
        return self.changelog_topic.prepare_value(value, self.value_serializer)[0]


# send(table, partition, raw key, raw value) -> the future of the record's acknowledgement
Send = Callable[[Any, int, bytes, bytes], Awaitable[asyncio.Future]]


class TableBundler(Gatherer):
    """Gathers the writes of bundled tables per (table, changelog partition) until `flush`."""

    def __init__(self, send: Send):
        super().__init__()
        self.send = send
        writer = uuid.uuid4().hex[:12]  # once: a generator's expression runs per item
        self._names = (f"{PREFIX}{writer}:{n}" for n in itertools.count())

    def add(self, table: BundledTable, partition: int, key: Any, value: Any,
            raw: bytes | None = None) -> asyncio.Future:
        """Queue a write (`raw`: the value's JSON when the store has it already); returns the
        future of its bundle's acknowledgement."""
        if raw is None:
            raw = orjson.dumps(value)  # encoded once, as it will be sent
        return self.gather(table, partition, [key, orjson.Fragment(raw)], len(raw))

    async def send_bundle(self, table: BundledTable, partition: int,
                          writes: list) -> asyncio.Future:
        return await self.send(table, partition, table.raw_key(next(self._names)),
                               orjson.dumps({BUNDLE: writes}))
