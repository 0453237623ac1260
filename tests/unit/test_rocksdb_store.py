"""The relay's RocksDB store reads and writes the same bytes as Faust's own, by its direct path
inside an event and by Faust's path outside one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import faust
import pytest

from app import rocksdb_store
from app.agents.context import Relay, bind_event, restore_event
from app.config import Settings


class Event:
    __slots__ = ("message", "__weakref__")

    def __init__(self, partition: int):
        self.message = SimpleNamespace(partition=partition, topic="t")


@contextmanager
def event_bound(event) -> Iterator[None]:
    """`event` is Faust's current event inside the block, as in a stage."""
    token = bind_event(event)
    try:
        yield
    finally:
        restore_event(token)


@pytest.fixture
def app(tmp_path):
    return faust.App("store-test", broker="kafka://127.0.0.1:1", store="rocksdb://",
                     datadir=str(tmp_path))


def tables(app, name: str, **kwargs):
    """The same table twice: Faust's store and the relay's, on separate files."""
    faust_table = app.Table(name, default=None, partitions=4, key_type=str, **kwargs)
    relay_table = app.Table(f"{name}-relay", default=None, partitions=4, key_type=str,
                            store=rocksdb_store.url(f"{name}-relay"), **kwargs)
    return faust_table, relay_table


VALUES = [{"status": "delivered", "at": 1733.5}, {"ids": ["a", "b"], "n": None},
          "text", 7, 2.5, [1, {"x": "ünïcode"}], True, {}]
KEYS = ["k", "ünïcode-key", "", "with space|and:colon", "x" * 300]


def test_it_is_the_relay_store_on_the_same_file_names(app):
    faust_table, relay_table = tables(app, "ledger")
    assert type(relay_table.data) is rocksdb_store.Store
    assert type(faust_table.data) is not rocksdb_store.Store
    assert relay_table.data.partition_path(2).name == "ledger-relay-2.db"
    assert faust_table.data.partition_path(2).name == "ledger-2.db"


@pytest.mark.parametrize("value", VALUES)
def test_json_values_are_written_as_faust_writes_them(app, value):
    faust_table, relay_table = tables(app, "ledger")
    with event_bound(Event(1)):
        for key in KEYS:
            faust_table.data[key] = value
            written = relay_table.data.write(key, value)
            raw_key = faust_table.data._encode_key(key)
            assert written == (raw_key, faust_table.data._encode_value(value))
            assert relay_table.data._dbs[1].get(raw_key) == faust_table.data._dbs[1].get(raw_key)
            assert relay_table.data.get(key) == faust_table.data.get(key) == value
            assert relay_table.data[key] == value


def test_bytes_values_pass_through(app):
    faust_table, relay_table = tables(app, "profiles", value_type=bytes)
    with event_bound(Event(0)):
        faust_table.data["p1"] = b'{"i":{}}'
        relay_table.data["p1"] = b'{"i":{}}'
        assert relay_table.data.get("p1") == faust_table.data.get("p1") == b'{"i":{}}'
        assert relay_table.data._dbs[0].get(b'"p1"') == b'{"i":{}}'


def test_each_event_reads_its_own_partition(app):
    _, table = tables(app, "ledger")
    with event_bound(Event(0)):
        table.data["k"] = {"in": 0}
    with event_bound(Event(3)):
        assert table.data.get("k") is None
        assert "k" not in table.data
        with pytest.raises(KeyError):
            table.data["k"]
        table.data["k"] = {"in": 3}
    with event_bound(Event(0)):
        assert table.data.get("k") == {"in": 0}
        assert "k" in table.data


def test_missing_keys_give_the_default(app):
    _, table = tables(app, "ledger")
    with event_bound(Event(2)):
        assert table.data.get("absent") is None
        assert table.data.get("absent", "fallback") == "fallback"


def test_without_an_event_faust_searches_every_partition(app):
    """Reads outside an event (an operator's view) still find what the direct path wrote."""
    faust_table, table = tables(app, "ledger")
    with event_bound(Event(2)):
        table.data["k"] = {"v": 1}
    assert table.data.get("k") == {"v": 1}
    assert table.data["k"] == {"v": 1}
    del table.data["k"]
    with event_bound(Event(2)):
        assert table.data.get("k") is None


def test_a_serialized_faust_model_comes_back_as_faust_would_return_it(app):
    class Point(faust.Record, namespace="test.point"):
        x: int

    faust_table, table = tables(app, "ledger")
    with event_bound(Event(1)):
        faust_table.data["p"] = Point(x=3)
        table.data["p"] = Point(x=3)  # Faust's path: not a plain value
        assert table.data.get("p") == faust_table.data.get("p") == Point(x=3)


def test_relay_tables_use_it_with_rocksdb_only(tmp_path):
    app = faust.App("store-relay", broker="kafka://127.0.0.1:1", store="rocksdb://",
                    datadir=str(tmp_path))
    relay = Relay(app, Settings(store="rocksdb://"), {}, [])
    for table in (relay.table("ledger", bundled=True), relay.table("profiles", value_type=bytes)):
        assert type(table.data) is rocksdb_store.Store
    memory = Relay(faust.App("store-memory", broker="kafka://127.0.0.1:1", store="memory://",
                             datadir=str(tmp_path)), Settings(store="memory://"), {}, [])
    assert type(memory.table("ledger").data) is not rocksdb_store.Store
