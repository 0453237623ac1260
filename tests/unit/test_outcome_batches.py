"""Outcomes go to relay.outcomes in batches, and bundled items in bundles, always before the
producer is flushed: Faust flushes before it commits offsets, so what a committed event caused
is never left behind."""

import asyncio
from types import SimpleNamespace

import orjson

from app.agents.context import OUTCOME_BATCH_MAX, Relay
from app.catalog import load_catalog
from app.config import load_settings
from app.partitioner import RememberingPartitioner


class Producer:
    def __init__(self):
        self.calls = []

    async def send(self, topic, key, value, partition, timestamp, headers):
        self.calls.append(("send", topic, orjson.loads(value)))
        acked = asyncio.get_running_loop().create_future()
        acked.set_result(SimpleNamespace(topic=topic, partition=partition, offset=0))
        return acked

    async def flush(self):
        self.calls.append(("flush",))


def relay_with(env=None) -> tuple[Relay, Producer]:
    producer = Producer()
    settings = load_settings(env or {})
    relay = Relay(SimpleNamespace(producer=producer, conf=SimpleNamespace(
        producer_partitioner=RememberingPartitioner())), settings, load_catalog(settings), [])
    relay.flush_buffers_before_producer_flush()
    return relay, producer


async def test_outcomes_wait_for_a_flush_and_go_out_first_as_one_record():
    relay, producer = relay_with()
    await relay.emit("ingress", "normalized", origin="air.outbound/0/1", event_ids=["e"])
    await relay.emit("route", "routed", event_id="e", deliveries=[])
    assert producer.calls == []
    await relay.app.producer.flush()  # what Faust calls before committing offsets
    assert [c[0] for c in producer.calls] == ["send", "flush"]
    _, topic, record = producer.calls[0]
    assert topic == "relay.outcomes"
    assert [(o["stage"], o["status"]) for o in record["batch"]] == [
        ("ingress", "normalized"), ("route", "routed")]
    assert all(o["at"].endswith("Z") for o in record["batch"])
    await relay.app.producer.flush()
    assert [c[0] for c in producer.calls] == ["send", "flush", "flush"]  # nothing new to write


async def test_a_full_batch_is_written_at_once_and_the_timer_writes_the_rest():
    relay, producer = relay_with()
    for i in range(OUTCOME_BATCH_MAX + 3):
        await relay.emit("deliver", "delivered", delivery_id=f"d{i}")
    assert len(producer.calls) == 1 and len(producer.calls[0][2]["batch"]) == OUTCOME_BATCH_MAX
    await relay.write_outcomes()  # the outcome-writer timer's work
    assert [o["delivery_id"] for o in producer.calls[1][2]["batch"]] == [
        f"d{OUTCOME_BATCH_MAX + i}" for i in range(3)]


async def test_nothing_is_gathered_when_outcomes_are_off():
    relay, producer = relay_with({"EMIT_OUTCOMES": "false"})
    await relay.emit("deliver", "delivered", delivery_id="d1")
    await relay.app.producer.flush()
    assert producer.calls == [("flush",)]


async def test_bundled_items_wait_for_a_flush_and_go_out_one_bundle_per_partition():
    relay, producer = relay_with()
    keys = [f"email:user{i}@example.com".encode() for i in range(40)]
    for key in keys:
        await relay.send("deliveries.braze", key, {"delivery_id": key.decode()})
    await relay.send("ingress.dlq", b"k", {"reason": "x"})  # not bundled: straight out
    assert [c[1] for c in producer.calls if c[0] == "send"] == ["ingress.dlq"]
    await relay.app.producer.flush()
    bundles = [c for c in producer.calls if c[0] == "send" and c[1] == "deliveries.braze"]
    partitions = {relay.partition_of("deliveries.braze", key) for key in keys}
    assert len(bundles) == len(partitions) > 1  # 40 keys over 4 partitions
    assert sorted(item[2]["delivery_id"] for _s, _t, value in bundles
                  for item in value["bundle"]) == sorted(k.decode() for k in keys)
    assert producer.calls[-1] == ("flush",)


async def test_a_batch_end_sends_only_bundles_that_have_lingered():
    """Every agent ends batches often; bundles younger than BATCH_LINGER_S wait for more items
    (the timer, a commit or a later batch end sends them), older ones go at once."""
    from app.agents.context import BATCH_LINGER_S

    relay, producer = relay_with()
    await relay.send("deliveries.braze", b"customer_id:C1", {"delivery_id": "d1"})
    await relay.flush_after_batch()
    assert [c for c in producer.calls if c[0] == "send" and c[1] != "relay.outcomes"] == []
    await asyncio.sleep(BATCH_LINGER_S * 1.5)
    await relay.send("deliveries.braze", b"customer_id:C1", {"delivery_id": "d2"})
    await relay.flush_after_batch()
    bundles = [c for c in producer.calls if c[0] == "send" and c[1] == "deliveries.braze"]
    assert len(bundles) == 1
    assert [item[2]["delivery_id"] for item in bundles[0][2]["bundle"]] == ["d1", "d2"]
    await relay.send("deliveries.braze", b"customer_id:C1", {"delivery_id": "d3"})
    await relay.flush_buffers()  # the timer's and the commit's flush wait for nothing
    bundles = [c for c in producer.calls if c[0] == "send" and c[1] == "deliveries.braze"]
    assert len(bundles) == 2
