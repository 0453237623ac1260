"""Faust's seek back to committed offsets covers partitions never committed
(app.faust_fixes.seek_to_committed), on the embedded broker with a real group consumer."""

import uuid

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from app.faust_fixes import seek_to_committed
from app.localstack import produce


async def _consumer_past(bootstrap: str, tps: list[TopicPartition]) -> AIOKafkaConsumer:
    """A group consumer that has fetched and consumed every record of `tps`, committing none:
    the state a discarded fetch leaves behind."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=f"seek-{uuid.uuid4().hex}",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    consumer.assign(tps)
    for _ in range(100):
        await consumer.getmany(timeout_ms=200)
        if all([await consumer.position(tp) for tp in tps]):
            return consumer
    await consumer.stop()
    raise AssertionError("the records were never fetched")


async def test_a_partition_never_committed_goes_back_to_its_first_record(broker):
    stream, changelog = f"seek-{uuid.uuid4().hex[:8]}", f"seek-{uuid.uuid4().hex[:8]}-changelog"
    await produce(broker.bootstrap, [(stream, b"k", b"a"), (stream, b"k", b"b"),
                                     (changelog, b"k", b"c")])
    tp, changelog_tp = TopicPartition(stream, 0), TopicPartition(changelog, 0)
    consumer = await _consumer_past(broker.bootstrap, [tp, changelog_tp])
    try:
        assert await consumer.position(tp) == 2
        committed = await seek_to_committed(consumer, {changelog})
        assert committed[tp] is None
        assert await consumer.position(tp) == 0
        # Changelogs are positioned by table recovery, not by this seek.
        assert await consumer.position(changelog_tp) == 1
        records = await consumer.getmany(tp, timeout_ms=5000)
        assert [r.value for r in records[tp]] == [b"a", b"b"]
    finally:
        await consumer.stop()


async def test_a_committed_partition_goes_back_to_its_committed_offset(broker):
    topic = f"seek-{uuid.uuid4().hex[:8]}"
    await produce(broker.bootstrap, [(topic, b"k", bytes([n])) for n in range(3)])
    tp = TopicPartition(topic, 0)
    consumer = await _consumer_past(broker.bootstrap, [tp])
    try:
        await consumer.commit({tp: OffsetAndMetadata(1, "")})
        assert await consumer.position(tp) == 3
        assert (await seek_to_committed(consumer, set()))[tp] == 1
        assert await consumer.position(tp) == 1
    finally:
        await consumer.stop()

