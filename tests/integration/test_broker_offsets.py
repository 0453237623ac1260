"""The embedded broker's ListOffsets gap, and its containment."""

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.broker import true_end_offsets


async def _produce_one_batch(bootstrap: str, topic: str, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
    await producer.start()
    try:
        futures = [await producer.send(topic, b"x" * 10, partition=0) for _ in range(n)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def test_end_offsets_are_confirmed_by_the_fetch_high_watermark(broker):
    topic = "events.normalized"
    await _produce_one_batch(broker.bootstrap, topic, 10)
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
    await consumer.start()
    try:
        reported = await consumer.end_offsets([tp])
    finally:
        await consumer.stop()
    fixed = await true_end_offsets(broker.bootstrap, reported)
    assert fixed[tp] == 10
    # The raw answer is the documented gap (base offset of the last batch + 1); if Tansu ever
    # fixes it, the containment is still correct and this line tells us it can go.
    assert reported[tp] in (1, 10)
