"""Bundles (app.bundles): items of an internal topic many to a record, in order, each with the
key and headers it would have had, and a plain record read as a bundle of one."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson
import pytest

from app import bundles
from app.bundles import Bundler


def record(value: bytes, key: bytes | None = None, headers=(), offset: int = 5):
    return SimpleNamespace(topic="identity.claims", partition=2, offset=offset, key=key,
                           headers=list(headers), value=value)


class Broker:
    """Accepts bundles in order; `hold` makes the next send wait until released."""

    def __init__(self):
        self.records: list[tuple[str, int, bytes]] = []
        self.hold: asyncio.Event | None = None

    async def send(self, topic, partition, value):
        if self.hold is not None:
            await self.hold.wait()
        self.records.append((topic, partition, value))
        acked = asyncio.get_running_loop().create_future()
        acked.set_result(SimpleNamespace(partition=partition, offset=len(self.records) - 1))
        return acked


def by_kind(topic: str, key: bytes) -> int:
    return 0 if key.startswith(b"email:") else 1


async def test_items_come_back_in_order_with_their_keys_and_headers():
    broker = Broker()
    bundler = Bundler(broker.send, by_kind)
    first = bundler.add("identity.claims", b"email:a@x.io", b'{"t":"email"}',
                        [("relay-identity-op", b"bind")])
    bundler.add("identity.claims", b"email:b@x.io", b'{"n":2}')
    bundler.add("identity.claims", b"phone:+1", b'{"n":3}')  # another partition
    await bundler.flush()
    assert [(t, p) for t, p, _ in broker.records] == [("identity.claims", 0), ("identity.claims", 1)]
    items = bundles.items(record(broker.records[0][2]))
    assert [(i.key, i.headers, i.doc) for i in items] == [
        (b"email:a@x.io", [("relay-identity-op", b"bind")], {"t": "email"}),
        (b"email:b@x.io", [], {"n": 2})]
    assert all((i.topic, i.partition, i.offset) == ("identity.claims", 2, 5) for i in items)
    assert orjson.loads(items[1].value) == {"n": 2}
    assert (await first).partition == 0  # the item's future: its bundle's acknowledgement


async def test_a_plain_record_is_a_bundle_of_one_with_its_own_bytes():
    raw = b'{"delivery_id": "braze:track_event:e1"}'
    [item] = bundles.items(record(raw, key=b"customer_id:C1", headers=[("h", b"v")]))
    assert (item.key, item.headers, item.value) == (b"customer_id:C1", [("h", b"v")], raw)
    assert bundles.docs(raw) == [{"delivery_id": "braze:track_event:e1"}]
    lookalike = b'{"bundle": [], "other": 1}'  # a bundle has nothing else
    assert bundles.docs(lookalike) == [{"bundle": [], "other": 1}]


def test_a_record_that_is_not_json_raises_for_the_caller_to_dead_letter():
    with pytest.raises(orjson.JSONDecodeError):
        bundles.items(record(b"not json"))


async def test_items_added_while_a_flush_waits_go_in_the_next_bundle_after_it():
    broker = Broker()
    bundler = Bundler(broker.send, lambda topic, key: 0)
    bundler.add("identity.profiles", b"p1", b"1")
    broker.hold = asyncio.Event()
    flushing = asyncio.ensure_future(bundler.flush())
    await asyncio.sleep(0)
    bundler.add("identity.profiles", b"p1", b"2")
    second = asyncio.ensure_future(bundler.flush())
    await asyncio.sleep(0)
    broker.hold.set()
    await asyncio.gather(flushing, second)
    assert [bundles.docs(value) for _t, _p, value in broker.records] == [[1], [2]]


async def test_a_bundle_is_full_at_max_bytes():
    bundler = Bundler(Broker().send, lambda topic, key: 0)
    item = orjson.dumps({"x": "y" * 10_000})
    while not bundler.full():
        bundler.add("deliveries.braze", b"k", item)
    assert len(bundler.pending[("deliveries.braze", 0)].entries) == bundles.MAX_BYTES // 10_076 + 1


async def test_a_failed_send_fails_the_items_futures_and_raises():
    async def broken(topic, partition, value):
        raise ConnectionError("broker gone")

    bundler = Bundler(broken, lambda topic, key: 0)
    future = bundler.add("deliveries.insider", b"k", b"{}")
    with pytest.raises(ConnectionError):
        await bundler.flush()
    with pytest.raises(ConnectionError):
        await future
