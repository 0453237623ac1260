"""One memory budget for all of a worker's RocksDB databases.

Faust opens one database per table partition, each with its own block cache and write
buffers, so a worker's memory grows with tables x partitions: the relay's 5 tables on 4
partitions are 20 databases, and per-database limits of 8 MB x 2 write buffers and a 16 MB
cache allowed ~640 MB before the Python heap. Here every database shares one LRU block cache
(`ROCKSDB_BLOCK_CACHE_MB`) and one write buffer manager (`ROCKSDB_WRITE_BUFFER_MB`, all memtables
together; RocksDB flushes the largest memtable when the sum nears it), so the two settings
bound the worker whatever the table and partition counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import rocksdict
from faust.stores.rocksdb import RocksDBOptions, Store

MB = 1024 * 1024


class Budget:
    """The shared cache and write buffer manager; one per worker process."""

    def __init__(self, write_buffer_mb: int, block_cache_mb: int):
        self.write_buffer_bytes = write_buffer_mb * MB
        self.cache = rocksdict.Cache(block_cache_mb * MB)
        # allow_stall=False: writers never block on the budget; RocksDB flushes instead.
        self.write_buffers = rocksdict.WriteBufferManager(self.write_buffer_bytes, False)

    def per_database(self) -> dict[str, int]:
        """Faust's per-database options: one memtable is an eighth of the shared budget, so
        a few busy partitions can fill it before the manager asks for a flush."""
        return {"write_buffer_size": max(MB, self.write_buffer_bytes // 8),
                "max_write_buffer_number": 2}

    def attach(self, table: Any) -> None:
        """Make `table`'s store open its databases within this budget (before any is open)."""
        store = table.data
        if isinstance(store, Store) and store.use_rocksdict:
            store.rocksdb_options = BudgetedOptions(self, **self.per_database(),
                                                    use_rocksdict=True)

    def meters(self) -> dict[str, Callable[[], int]]:
        """Bytes in use, by kind (the `kind` label of relay_rocksdb_memory_bytes)."""
        return {"write_buffers": self.write_buffers.get_usage, "block_cache": self.cache.get_usage}

    def usage(self) -> dict[str, int]:
        return {kind: meter() for kind, meter in self.meters().items()}


class BudgetedOptions(RocksDBOptions):
    """Faust's rocksdict options with the shared cache and write buffer manager."""

    def __init__(self, budget: Budget, **kwargs: Any):
        super().__init__(**kwargs)
        self.budget = budget

    def as_options(self) -> rocksdict.Options:
        options = super().as_options()
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, True)
        table.set_block_cache(self.budget.cache)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        options.set_write_buffer_manager(self.budget.write_buffers)
        return options
