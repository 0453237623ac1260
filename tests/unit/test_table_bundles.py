"""app/table_bundles.py: many writes of a table in one changelog record, and recovery that
applies them one by one to either store."""

from __future__ import annotations

import asyncio

import faust
import orjson
import pytest
from faust.types import TP, Message

from app.table_bundles import PREFIX, BundledTable, TableBundler


def make_table(store: str, datadir) -> BundledTable:
    app = faust.App("bundles-test", broker="kafka://127.0.0.1:1", store=store,
                    datadir=str(datadir), topic_partitions=4)
    return app.tables.add(BundledTable(app, name="ledger", default=None,
                                       beacon=app.tables.beacon, partitions=4, key_type=str))


class Sent:
    """Records what a bundler sends, acknowledged at once with made-up offsets."""

    def __init__(self):
        self.records: list[tuple[int, bytes, bytes]] = []

    async def __call__(self, table, partition, raw_key, raw_value):
        self.records.append((partition, raw_key, raw_value))
        future = asyncio.get_running_loop().create_future()
        future.set_result(len(self.records) - 1)
        return future


def as_events(table: BundledTable, records) -> list:
    """The changelog records as Faust's recovery hands them over (raw message, decoded
    key and value, as the memory store reads them)."""
    topic = table.changelog_topic.get_topic_name()
    events = []
    for offset, (partition, raw_key, raw_value) in enumerate(records):
        message = Message(topic, partition, offset, 0.0, 0, [], raw_key, raw_value, None,
                          tp=TP(topic, partition))
        key = orjson.loads(raw_key)
        value = None if raw_value is None else orjson.loads(raw_value)
        events.append(type("Event", (), {"message": message, "key": key, "value": value})())
    return events


async def test_writes_of_a_partition_go_in_one_record_in_order(tmp_path):
    table, sent = make_table("memory://", tmp_path), Sent()
    bundler = TableBundler(sent)
    first = bundler.add(table, 1, "braze:track_event:e1:r", {"status": "sending"})
    bundler.add(table, 1, "braze:track_event:e1:r", {"status": "delivered"})
    other = bundler.add(table, 3, "sending|deliveries.braze|3", {"ids": ["a", "b"]})
    await bundler.flush()
    assert [(p, orjson.loads(v)) for p, _k, v in sent.records] == [
        (1, {"bundle": [["braze:track_event:e1:r", {"status": "sending"}],
                        ["braze:track_event:e1:r", {"status": "delivered"}]]}),
        (3, {"bundle": [["sending|deliveries.braze|3", {"ids": ["a", "b"]}]]})]
    keys = [orjson.loads(k) for _p, k, _v in sent.records]
    assert all(k.startswith(PREFIX) for k in keys) and len(set(keys)) == 2  # never compacted
    await asyncio.sleep(0)
    assert first.result() == 0 and other.result() == 1
    assert not bundler.pending


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_recovery_applies_each_write_of_a_bundle(tmp_path, store):
    writer, sent = make_table("memory://", tmp_path / "w"), Sent()
    bundler = TableBundler(sent)
    bundler.add(writer, 2, "k1", {"status": "sending"})
    bundler.add(writer, 2, "k2", {"status": "delivered"})
    bundler.add(writer, 2, "k1", {"status": "dead_lettered"})
    await bundler.flush()
    # a record from a worker before bundles is applied as it is
    sent.records.append((2, writer.raw_key("k3"), writer.raw_value({"status": "skipped"})))

    table = make_table(store, tmp_path / "r")
    table.apply_changelog_batch(as_events(table, sent.records))
    assert {k: table.data[k] for k in ("k1", "k2", "k3")} == {
        "k1": {"status": "dead_lettered"}, "k2": {"status": "delivered"},
        "k3": {"status": "skipped"}}
    assert not any(str(k).startswith(PREFIX) for k in table.data.keys())


async def test_a_failed_send_fails_the_writes_futures(tmp_path):
    table = make_table("memory://", tmp_path)

    async def broken(*_args):
        raise RuntimeError("producer stopped")

    bundler = TableBundler(broken)
    future = bundler.add(table, 0, "k", {"status": "sending"})
    with pytest.raises(RuntimeError):
        await bundler.flush()
    with pytest.raises(RuntimeError):
        await future
