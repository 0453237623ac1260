"""Faust's RocksDB store with a direct path for the reads and writes the stages make.

Every read of Faust's store goes through the serializer registry twice (key, then value), a
KeyError raised and caught for a missing key, and an LRU index of key -> partition updated
under a lock: 4.3 us for a read that costs RocksDB 0.5 us, 4.7 us for a write, and the
stages make about eight of them per event (8 % of the worker with 1,000,000 profiles,
BENCHMARKS.md). Here a read or write made in an event's context (every one the stages make)
encodes the key and value as Faust's codecs would, with the same functions, and goes to the
event's partition database directly. The bytes on disk and in the changelog are the same, so
a store written by either reads back in the other.

Anything else (no current event, a global table, a codec other than `json` keys and `json` or
`raw` values, a value Faust would turn back into a model) takes Faust's own path. The fast path
leaves the key index alone: Faust reads it only for reads without an event and for deletes,
and searches every partition's bloom filter when a key is not in it.
"""

from __future__ import annotations

from typing import Any

import orjson
from faust import stores
from faust.stores import rocksdb
from faust.streams import current_event
from faust.utils import json as faust_json

SCHEME = "relay-rocksdb"
MODEL_MARK = "__faust"  # a dict carrying it is a serialized Faust model


def url(table: str) -> str:
    """The store URL of `table` (`store=url(name)`): the path is the table's name, as Faust
    makes it for `rocksdb://`, so the databases are the same files. A URL without a path is
    false to yarl, and Faust would take the app's store instead."""
    stores.STORES.aliases.setdefault(SCHEME, f"{__name__}:Store")
    return f"{SCHEME}:{table}"


class Store(rocksdb.Store):
    """`rocksdb://` with `get` and `set` straight to the event's partition database."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A table's kind is fixed before Faust makes its store (on first use of `table.data`).
        self._direct = (self.key_type is str and self.key_serializer == "json"
                        and self.value_serializer in ("json", "raw")
                        and self.value_type in (None, bytes)
                        and not self.table.is_global and not self.table.use_partitioner)
        self._raw_values = self.value_serializer == "raw"

    def _database(self, key: Any) -> Any:
        """The current event's partition database for `key`, or None where Faust's path must
        decide."""
        if type(key) is not str or not self._direct:
            return None
        event = current_event()
        if event is None:
            return None
        return self._db_for_partition(event.message.partition)

    def get(self, key: Any, default: Any = None) -> Any:
        db = self._database(key)
        if db is None:
            try:
                return super().__getitem__(key)
            except KeyError:
                return default
        value = self._read(db, key)
        return default if value is _MISSING else value

    def __getitem__(self, key: Any) -> Any:
        db = self._database(key)
        if db is None:
            return super().__getitem__(key)
        value = self._read(db, key)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def _read(self, db: Any, key: str) -> Any:
        raw = db.get(faust_json.dumps(key))
        if raw is None:
            return _MISSING
        if self._raw_values:
            return raw
        value = orjson.loads(raw)
        if type(value) is dict and MODEL_MARK in value:
            return self._decode_value(raw)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        if self.write(key, value) is None:
            super().__setitem__(key, value)

    def write(self, key: Any, value: Any) -> tuple[bytes, bytes] | None:
        """`self[key] = value` by the direct path, returning the key and value bytes written
        (what the changelog record carries); None, having written nothing, where Faust's path
        must do it."""
        db = self._database(key)
        if db is None:
            return None
        if isinstance(value, bytes):
            raw = value  # Faust's registry passes bytes through, whatever the codec
        elif self._raw_values:
            return None
        else:
            raw = faust_json.dumps(value)
        raw_key = faust_json.dumps(key)
        db.put(raw_key, raw)
        return raw_key, raw


_MISSING = object()
