"""Kafka's default partitioner, with each key's hash remembered.

aiokafka computes the Java client's murmur2 in pure Python on every keyed send (~2 % of the
worker's CPU in `relay bench`), and the relay sends the same customer key to several topics
per event. The partition chosen is exactly the default one, so records of one key land where
any other Kafka client would put them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from aiokafka.partitioner import murmur2


def kafka_hash(key: bytes) -> int:
    """The non-negative hash Kafka's default partitioner takes modulo the partition count."""
    return murmur2(key) & 0x7FFFFFFF


class RememberingPartitioner:
    """A drop-in for `aiokafka.partitioner.DefaultPartitioner` (Faust's `producer_partitioner`).

    The cache is cleared when full rather than evicted entry by entry: hashing again is cheap
    next to bookkeeping on every send."""

    def __init__(self, max_keys: int = 100_000):
        self.max_keys = max_keys
        self._hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: Sequence[int],
                 available: Sequence[int]) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        return all_partitions[self.hash_of(key) % len(all_partitions)]

    def hash_of(self, key: bytes) -> int:
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self.max_keys:
                self._hashes.clear()
            hashed = self._hashes[key] = kafka_hash(key)
        return hashed
