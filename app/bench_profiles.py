"""Profiles for `relay bench`: an identity graph written straight into the worker's changelogs.

A million profiles cannot go through `identity.updates` in a benchmark's time, and a restarted
production worker would not receive them that way either: it restores its tables from their
changelogs. So the bench writes the two changelogs of the identity graph, in the format the
stages themselves write (`app.identity.graph.seed`), each record on the partition its stage
would have written it to:

- `<app id>-profiles-changelog`: profile id -> profile, on the partition of `identity.profiles`
  the profile id hashes to (the route stage owns the profile);
- `<app id>-identities-changelog`: `<type>:<value>` -> profile id, on the partition of
  `identity.claims` the identifier key hashes to (the identity stage owns the entry).

Keys are JSON strings (the tables' key serializer), values raw bytes. The bench traffic comes
from the first profiles (`members`) with these same identifiers, so its events find them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from app.samples import Customer

IDENTIFIERS = ("customer_id", "email", "phone", "line_uid")
CHUNK = 50_000  # profiles generated and sent at a time: bounded memory


def partition_of(key: str, partitions: int) -> int:
    from app.partitioner import kafka_hash

    return kafka_hash(key.encode()) % partitions


def profile_ids(i: int) -> dict[str, str]:
    """The identifiers of bench profile `i`, already normalized."""
    return {"customer_id": f"C{100000 + i}", "email": f"member{i}@example.com",
            "phone": f"+8869{i % 10**8:08d}", "line_uid": f"U{i:032x}"}


def members(count: int) -> list[Customer]:
    """The customers of the bench traffic: pre-loaded profiles `0..count - 1`, each with the
    identifiers the graph holds for it, presented as upstream systems do (local phone format,
    mixed-case e-mail now and then). Their other ids are stable per member, as a person's are."""
    import random

    from app.samples import make_customer

    out = []
    for i in range(count):
        rng = random.Random(i)
        ids = profile_ids(i)
        customer = make_customer(rng, i)
        customer.customer_id, customer.line_uid = ids["customer_id"], ids["line_uid"]
        customer.email = ids["email"] if rng.random() < 0.8 else f" {ids['email'].title()} "
        customer.phone = ids["phone"] if rng.random() < 0.5 else "0" + ids["phone"][4:]
        out.append(customer)
    return out


def changelog_records(start: int, stop: int, partitions: int, ts: int
                      ) -> Iterator[tuple[str, int, bytes, bytes]]:
    """(table, partition, key, value) for profiles `start`..`stop - 1`."""
    from app.identity.graph import seed

    for i in range(start, stop):
        pid, prof, entries = seed(profile_ids(i), ts, {"first_name": f"Member{i}", "tier": "Gold"})
        yield "profiles", partition_of(pid, partitions), orjson.dumps(pid), prof
        for key, entry in entries:
            yield "identities", partition_of(key, partitions), orjson.dumps(key), entry


async def preload(bootstrap: str, app_ids: list[str], partitions: int, count: int) -> int:
    """Write `count` profiles into the identity-graph changelogs of every app id; returns the
    number of changelog records written per app id."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    topics = {(app_id, table): f"{app_id}-{table}-changelog"
              for app_id in app_ids for table in ("profiles", "identities")}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        await admin.create_topics([NewTopic(t, partitions, 1) for t in topics.values()])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=1 << 20,
                                max_request_size=4 << 20, linger_ms=50)
    written, ts = 0, int(time.time()) - 86_400
    try:
        await producer.start()
        for start in range(0, count, CHUNK):
            grouped: dict[tuple[str, int], list[tuple[bytes, bytes]]] = defaultdict(list)
            for table, partition, key, value in changelog_records(
                    start, min(start + CHUNK, count), partitions, ts):
                grouped[table, partition].append((key, value))
            written += sum(len(v) for v in grouped.values())
            for app_id in app_ids:
                for (table, partition), items in grouped.items():
                    await send_in_batches(producer, topics[app_id, table], partition, items)
    finally:
        await producer.stop()
    return written


async def send_in_batches(producer, topic: str, partition: int,
                          items: list[tuple[bytes, bytes]]) -> None:
    """Whole record batches per request: ~10x the throughput of one `send` per record."""
    futures = []
    batch = producer.create_batch()
    for key, value in items:
        if batch.append(key=key, value=value, timestamp=None) is None:
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)
    if batch.record_count():
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    for future in futures:
        await future
