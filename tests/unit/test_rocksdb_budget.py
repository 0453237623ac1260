"""Every RocksDB database of a worker shares one block cache and one write buffer budget."""

from __future__ import annotations

import os

import faust
import pytest
from prometheus_client import REGISTRY

from app.agents.context import Relay
from app.config import Settings
from app.rocksdb_budget import MB, Budget, BudgetedOptions


@pytest.fixture
def relay(tmp_path):
    app = faust.App("budget-test", broker="kafka://127.0.0.1:1", store="rocksdb://",
                    datadir=str(tmp_path))
    settings = Settings(store="rocksdb://", rocksdb_write_buffer_mb=8, rocksdb_block_cache_mb=4)
    return Relay(app, settings, {}, [])


def test_every_table_store_opens_within_the_one_budget(relay):
    a, b = relay.table("ledger"), relay.table("profiles", value_type=bytes)
    options = [a.data.rocksdb_options, b.data.rocksdb_options]
    assert all(isinstance(o, BudgetedOptions) for o in options)
    assert options[0].budget is options[1].budget is relay.rocksdb_budget()
    assert options[0].write_buffer_size == MB  # an eighth of 8 MB
    for kind in ("write_buffers", "block_cache"):
        assert REGISTRY.get_sample_value("relay_rocksdb_memory_bytes", {"kind": kind}) == 0


def test_memory_store_tables_are_left_alone(tmp_path):
    app = faust.App("budget-memory", broker="kafka://127.0.0.1:1", store="memory://",
                    datadir=str(tmp_path))
    relay = Relay(app, Settings(store="memory://"), {}, [])
    relay.table("ledger")
    assert relay._rocksdb is None


def test_many_databases_stay_within_the_shared_limits(tmp_path):
    """Eight databases written and read well past the budget: the sum of their memtables and
    of their cached blocks stays near the configured totals, not eight times them."""
    budget = Budget(write_buffer_mb=8, block_cache_mb=4)
    options = BudgetedOptions(budget, **budget.per_database(), use_rocksdict=True)
    dbs = [options.open(tmp_path / f"p{i}") for i in range(8)]
    peak = 0
    try:
        for n in range(120_000):  # ~24 MB of values
            dbs[n % 8][b"k%d" % n] = os.urandom(200)
            if n % 2_000 == 0:
                peak = max(peak, budget.usage()["write_buffers"])
        for n in range(0, 120_000, 3):
            assert len(dbs[n % 8][b"k%d" % n]) == 200
        usage = budget.usage()
    finally:
        for db in dbs:
            db.close()
    assert 0 < peak <= 8 * MB * 1.5
    assert 0 < usage["block_cache"] <= 4 * MB * 1.05
