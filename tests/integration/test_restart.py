"""A worker restarted against the embedded broker recovers its tables completely, for the memory
and the RocksDB store (the ListOffsets gap would leave them short of the last batch), through
Faust's own recovery and through the fast changelog loader (app/fast_recovery.py)."""

import asyncio
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from app.broker import free_port, true_end_offsets
from app.localstack import produce
from tests.integration.conftest import logged_state, wait_until


def identity_update(i: int) -> bytes:
    return orjson.dumps({
        "update_id": f"u-{uuid.uuid4()}", "source": "crm",
        "identifiers": {"customer_id": f"R-{i}", "email": f"user{i}@example.com"},
        "attributes": {"first_name": "Test"}, "updated_at": "2026-11-22T10:00:00Z",
    })


def profile(url: str, kind: str, value: str) -> dict:
    reply = httpx.get(f"{url}/profiles/{kind}/{value}", timeout=5,
                      headers={"Authorization": "Bearer t0k"})
    assert reply.status_code == 200, reply.text
    return reply.json()


def table_sizes(worker) -> dict:
    return httpx.get(f"{worker.url}/_relay/tables", timeout=5).json()


async def all_committed(bootstrap: str, group: str, topics: list[str]) -> bool:
    """The group's committed offsets reach the end of `topics`: Faust flushes the producer before
    it commits, so every table write those records caused is in the changelogs."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    # Assigned, not subscribed: reads the group's offsets without joining it.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        consumer.assign(tps)
        ends = await true_end_offsets(bootstrap, await consumer.end_offsets(tps))
        for tp in tps:
            if ends[tp] and (await consumer.committed(tp) or 0) < ends[tp]:
                return False
        return bool(tps)
    finally:
        await consumer.stop()


def fast_loads(worker) -> list[dict]:
    lines = Path(worker.log_path).read_text(errors="replace").splitlines()
    return [orjson.loads(line[line.index("{"):]) for line in lines
            if '"recovery.fast_load"' in line]


@pytest.mark.parametrize(("store", "fast_min"), [
    ("memory://", "0"), ("memory://", "1"), ("rocksdb://", "0"), ("rocksdb://", "1")])
def test_tables_survive_a_restart(broker, sandbox, start_worker, tmp_path, store, fast_min):
    app_id = f"restart-{store[:3]}-{fast_min}"
    data_dir = str(tmp_path / "state")
    port = free_port()
    first = start_worker(port=port, data_dir=data_dir, STORE=store, APP_ID=app_id,
                         ADMIN_TOKEN="t0k")
    n = 300
    records = [("identity.updates", f"R-{i}".encode(), identity_update(i)) for i in range(n)]
    asyncio.run(produce(broker.bootstrap, records))
    # every profile and both identifiers of each (customer_id, email) bound: the sizes are final
    # (alone this takes ~15 s; once, under a full suite on 2 cores, it took over 90 s)
    seen: list[dict] = []

    def filled():
        seen.append(table_sizes(first))
        return seen[-1]["profiles"] >= n and seen[-1]["identities"] >= 2 * n and seen[-1]

    try:
        sizes = wait_until(filled, 180, what="profiles and index filled")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; table sizes at the end: {seen[-1:]}") from None
    # The tables fill before their changelog writes reach the broker (by seconds under load):
    # crash only once a crash can no longer lose them, i.e. once the input is committed.
    wait_until(lambda: asyncio.run(all_committed(broker.bootstrap, app_id, [
        "identity.updates", "identity.claims", "identity.profiles"])), 60,
        what="the input committed")
    assert table_sizes(first) == sizes
    before = profile(first_url := first.url, "customer_id", "R-7")
    first.kill()  # a crash, not a clean shutdown
    if store == "rocksdb://" and fast_min == "1":
        data_dir = str(tmp_path / "new-disk")  # a node that lost its disk: all from the changelog
    second = start_worker(port=port, data_dir=data_dir, STORE=store, APP_ID=app_id,
                          ADMIN_TOKEN="t0k", FAST_RECOVERY_MIN=fast_min)
    after = table_sizes(second)
    assert after == sizes
    # Only the changelogs stay paused in aiokafka after recovery (left out of every fetch); the
    # stream partitions, paused there during recovery, were resumed.
    paused = logged_state(second)["paused_in_client"]
    assert paused and all(tp.split("/")[0].endswith("-changelog") for tp in paused), paused
    assert second.url == first_url
    recovered = profile(second.url, "customer_id", "R-7")
    assert recovered == before and recovered["identities"]["email"] == "user7@example.com"
    loaded = sum(entry["records"] for entry in fast_loads(second))
    if fast_min == "0":
        assert loaded == 0
    else:  # nothing local: every changelog record came through the loader
        assert loaded >= sizes["profiles"] + sizes["identities"]
