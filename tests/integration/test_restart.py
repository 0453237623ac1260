"""A worker restarted against the embedded broker recovers its tables completely, for the memory
and the RocksDB store (the ListOffsets gap would leave them short of the last batch)."""

import asyncio
import uuid

import httpx
import orjson
import pytest

from app.broker import free_port
from app.localstack import produce
from tests.integration.conftest import wait_until


def identity_update(i: int) -> bytes:
    return orjson.dumps({
        "update_id": f"u-{uuid.uuid4()}", "source": "crm",
        "identifiers": {"customer_id": f"R-{i}", "email": f"user{i}@example.com"},
        "attributes": {"first_name": "Test"}, "updated_at": "2026-11-22T10:00:00Z",
    })


def table_sizes(worker) -> dict:
    return httpx.get(f"{worker.url}/_relay/tables", timeout=5).json()


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_tables_survive_a_restart(broker, sandbox, start_worker, tmp_path, store):
    app_id = f"restart-{store[:3]}"
    data_dir = str(tmp_path / "state")
    port = free_port()
    first = start_worker(port=port, data_dir=data_dir, STORE=store, APP_ID=app_id)
    n = 300
    records = [("identity.updates", f"R-{i}".encode(), identity_update(i)) for i in range(n)]
    asyncio.run(produce(broker.bootstrap, records))
    sizes = wait_until(lambda: (s := table_sizes(first))["identities"] >= n and s,
                       60, what="identity table filled")
    first.kill()  # a crash, not a clean shutdown
    second = start_worker(port=port, data_dir=data_dir, STORE=store, APP_ID=app_id)
    after = table_sizes(second)
    assert after["identities"] == sizes["identities"]
    assert after["ledger"] == sizes["ledger"]
