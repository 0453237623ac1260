"""The remembering partitioner must pick exactly Kafka's default partition."""

from aiokafka.partitioner import DefaultPartitioner

from app.partitioner import RememberingPartitioner


def test_same_partition_as_kafka_default_for_every_key_and_count():
    ours, kafka = RememberingPartitioner(max_keys=50), DefaultPartitioner()
    keys = [f"line_uid:U{i:032x}".encode() for i in range(300)] + [b"", b"a", b"\xff\xfe"]
    for count in (1, 3, 4, 12):
        parts = list(range(count))
        for key in keys + keys:  # second pass answers from the cache (cleared when full)
            assert ours(key, parts, parts) == kafka(key, parts, parts), (key, count)


def test_cache_is_bounded():
    ours = RememberingPartitioner(max_keys=10)
    for i in range(95):
        ours(str(i).encode(), [0, 1], [0, 1])
    assert len(ours._hashes) <= 10


def test_no_key_spreads_over_available_partitions():
    ours = RememberingPartitioner()
    chosen = {ours(None, [0, 1, 2, 3], [1, 3]) for _ in range(200)}
    assert chosen == {1, 3}
    assert {ours(None, [0, 1], []) for _ in range(200)} == {0, 1}


def test_the_bench_preloads_profiles_where_the_worker_will_look_for_them():
    from app.bench_profiles import partition_of

    ours = RememberingPartitioner()
    for key in ("p-1", "email:amy@example.com", "line_uid:U" + "0" * 32):
        assert partition_of(key, 4) == ours(key.encode(), [0, 1, 2, 3], [0, 1, 2, 3])
