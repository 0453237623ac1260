"""Bundles: the items of an internal topic sent many to one Kafka record.

A Kafka record costs the worker about as much as the relay's own work on an item, whatever its
size: the producer's accumulator and sender, the consumer thread's decoding and CRC, the
broker's append and fetch. An event used to write about four of them to the internal topics
(`events.normalized`, `identity.claims`, `identity.profiles`, `deliveries.<destination>`,
`feedback.insider`: `bundled: true` in `topics/catalog.yaml`). These topics now carry bundles:
one record per partition holding the items sent there since the last flush, in order, each
with its own key and headers::

    {"bundle": [[key, headers, item], ...]}

`key` is the item's key as text (the record key it would have had, so the bundle lands in the
partition the item would have), `headers` a list of `[name, text value]` pairs or null, and
`item` the item's own JSON, embedded as it was encoded (`orjson.Fragment`: not encoded twice).

Order is kept: items of one partition are flushed in the order they were added, and a bundle
is one record of that partition. A bundle is flushed at the end of every batch an agent
processes, before the producer flush that precedes every offset commit, and by a timer for the
rest, so an item reaches the broker before the offsets of whatever caused it are committed.

Readers take a record without a bundle (an operator's re-drive onto a delivery topic, a worker
from before bundles) as a bundle of one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson

BUNDLE = "bundle"
MAX_BYTES = 512 * 1024  # a bundle is sent once it holds this much (Kafka's default limit is 1 MB)
# Records a reader of a bundled topic takes in one batch (the batch agents' `max_records`): each
# may hold hundreds of items, and the items are what a batch should be bounded by.
BUNDLES_PER_BATCH = 64


class Item:
    """One item of a bundle, shaped like a Kafka record for the stages (topic, partition,
    offset, key, headers, value), with its JSON already parsed (`doc`)."""

    __slots__ = ("topic", "partition", "offset", "key", "headers", "doc", "_raw")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None,
                 headers: list, doc: Any, raw: bytes | None = None):
        self.topic, self.partition, self.offset = topic, partition, offset
        self.key, self.headers, self.doc, self._raw = key, headers, doc, raw

    @property
    def value(self) -> bytes:
        """The item's JSON bytes (encoded again from `doc` for an item of a bundle)."""
        if self._raw is None:
            self._raw = orjson.dumps(self.doc)
        return self._raw


def items(record: Any) -> list[Item]:
    """The items of a Kafka record of a bundled topic. Raises orjson.JSONDecodeError when the
    value is not JSON."""
    doc = orjson.loads(record.value)
    if isinstance(doc, dict) and isinstance(doc.get(BUNDLE), list) and len(doc) == 1:
        topic, partition, offset = record.topic, record.partition, record.offset
        return [Item(topic, partition, offset, None if key is None else key.encode(),
                     [(name, value.encode()) for name, value in headers] if headers else [],
                     item)
                for key, headers, item in doc[BUNDLE]]
    return [Item(record.topic, record.partition, record.offset, record.key,
                 list(record.headers or ()), doc, record.value)]


def docs(value: bytes) -> list[Any]:
    """The item documents of a record value of a bundled topic (for readers outside the
    workers: tests, tools)."""
    doc = orjson.loads(value)
    if isinstance(doc, dict) and isinstance(doc.get(BUNDLE), list) and len(doc) == 1:
        return [item for _key, _headers, item in doc[BUNDLE]]
    return [doc]


class _Pending:
    __slots__ = ("entries", "size", "future")

    def __init__(self) -> None:
        self.entries: list[list] = []
        self.size = 0
        self.future: asyncio.Future = asyncio.get_running_loop().create_future()


class Gatherer:
    """Entries per (target, partition) until `flush`, then one record each, in the order they
    were started; subclasses say how a record is sent (`send_bundle`)."""

    def __init__(self) -> None:
        self.pending: dict[tuple[Any, int], _Pending] = {}
        self._lock = asyncio.Lock()
        self._full = False
        self._since = 0.0  # when the oldest pending entry was gathered (time.monotonic)

    def gather(self, target: Any, partition: int, entry: list, size: int) -> asyncio.Future:
        """Queue an entry of about `size` bytes; returns the future of its record's
        acknowledgement."""
        pending = self.pending.get((target, partition))
        if pending is None:
            if not self.pending:
                self._since = time.monotonic()
            pending = self.pending[(target, partition)] = _Pending()
        pending.entries.append(entry)
        pending.size += size + 64
        if pending.size >= MAX_BYTES:
            self._full = True
        return pending.future

    def full(self) -> bool:
        """Whether a bundle reached MAX_BYTES since the last flush."""
        return self._full

    def waited(self) -> float:
        """How long the oldest pending entry has waited, in seconds (0 when none waits)."""
        return time.monotonic() - self._since if self.pending else 0.0

    async def flush(self) -> None:
        """Hand every pending bundle to the producer, in the order they were started."""
        async with self._lock:  # two flushes must not interleave one partition's bundles
            self._full = False
            while self.pending:
                (target, partition), pending = next(iter(self.pending.items()))
                del self.pending[(target, partition)]
                try:
                    acked = await self.send_bundle(target, partition, pending.entries)
                except BaseException as exc:
                    fail(pending.future, exc)
                    raise
                chain(acked, pending.future)

    async def send_bundle(self, target: Any, partition: int, entries: list) -> Awaitable[Any]:
        raise NotImplementedError


Send = Callable[[str, int, bytes], Awaitable[Awaitable[Any]]]


class Bundler(Gatherer):
    """Gathers items per (topic, partition) until `flush`; `send(topic, partition, value)`
    hands a bundle to the producer and returns the future of its acknowledgement."""

    def __init__(self, send: Send, partition_of: Callable[[str, bytes], int]):
        super().__init__()
        self.send = send
        self.partition_of = partition_of

    def add(self, topic: str, key: bytes | None, value: bytes,
            headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future:
        """Queue an item; returns the future of its bundle's acknowledgement (its record
        metadata: partition and offset of the bundle)."""
        return self.gather(topic, self.partition_of(topic, key or b""), [
            None if key is None else key.decode(),
            [[name, raw.decode()] for name, raw in headers] if headers else None,
            orjson.Fragment(value)], len(value))

    async def send_bundle(self, topic: str, partition: int, entries: list) -> Awaitable[Any]:
        return await self.send(topic, partition, orjson.dumps({BUNDLE: entries}))

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return iter(self.pending)


def chain(source: Any, target: asyncio.Future) -> None:
    """Settle `target` as `source` (a future or coroutine) settles."""
    def done(fut: asyncio.Future) -> None:
        if target.done():
            return
        if fut.cancelled():
            target.cancel()
        elif fut.exception() is not None:
            target.set_exception(fut.exception())
        else:
            target.set_result(fut.result())
    asyncio.ensure_future(source).add_done_callback(done)


def fail(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
