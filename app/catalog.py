"""The topic catalog (`topics/catalog.yaml`): every topic's name, key, partitions, cleanup policy,
retention and value schema. Topics are created from it before any worker starts, because a topic
auto-created by a producer gets the broker's default partition count and breaks co-partitioned
tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import yaml

from app.config import ConfigError, Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    kind: str
    key: str
    partitions: int
    cleanup_policy: str
    retention_ms: int | None
    schema: str | None
    source: str | None = None
    bundled: bool = False  # items travel many to a record (app.bundles)

    @property
    def config(self) -> dict[str, str]:
        cfg = {"cleanup.policy": self.cleanup_policy}
        if self.retention_ms is not None:
            cfg["retention.ms"] = str(self.retention_ms)
        return cfg


def load_catalog(settings: Settings) -> dict[str, TopicSpec]:
    return _load(settings.catalog_file, settings.partitions)


@lru_cache(maxsize=8)
def _load(path: str, default_partitions: int) -> dict[str, TopicSpec]:
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"CATALOG_FILE cannot be read: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("topics"), list):
        raise ConfigError("CATALOG_FILE must hold a 'topics' list")
    defaults = doc.get("defaults") or {}
    specs: dict[str, TopicSpec] = {}
    for entry in doc["topics"]:
        name = entry.get("name")
        if not name:
            raise ConfigError("CATALOG_FILE has a topic without a name")
        partitions = entry.get("partitions", defaults.get("partitions")) or default_partitions
        specs[name] = TopicSpec(
            name=name,
            kind=entry.get("kind", ""),
            key=str(entry.get("key", "")),
            partitions=int(partitions),
            cleanup_policy=entry.get("cleanup_policy", "delete"),
            retention_ms=entry.get("retention_ms"),
            schema=entry.get("schema"),
            source=entry.get("source"),
            bundled=bool(entry.get("bundled", False)),
        )
    return specs


def load_schema(settings: Settings, spec: TopicSpec) -> dict[str, Any] | None:
    if not spec.schema:
        return None
    path = Path(settings.catalog_file).parent / spec.schema
    return orjson.loads(path.read_bytes())


async def create_topics(bootstrap: str | list[str], specs: dict[str, TopicSpec]) -> list[str]:
    """Create every catalog topic that does not exist yet; returns the names created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [s for s in specs.values() if s.name not in existing]
        if missing:
            await admin.create_topics([
                NewTopic(s.name, s.partitions, 1, topic_configs=s.config) for s in missing
            ])
        return [s.name for s in missing]
    finally:
        await admin.close()


async def describe_topics(bootstrap: str | list[str], specs: dict[str, TopicSpec]) -> list[dict]:
    """The catalog side by side with what the broker reports (partitions, records held)."""
    from aiokafka import AIOKafkaConsumer

    from app.broker import record_counts

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        await consumer.start()
        existing = await consumer.topics()
        partitions = {spec.name: len(consumer.partitions_for_topic(spec.name) or ())
                      for spec in specs.values() if spec.name in existing}
    finally:
        await consumer.stop()
    counts = await record_counts(bootstrap, partitions)
    return [{"name": spec.name, "kind": spec.kind, "key": spec.key,
             "partitions": spec.partitions, "cleanup_policy": spec.cleanup_policy,
             "retention_ms": spec.retention_ms, "schema": spec.schema,
             "exists": spec.name in partitions, "broker_partitions": partitions.get(spec.name),
             "messages": counts.get(spec.name)}
            for spec in specs.values()]


def bootstrap_of(broker_url: str) -> list[str]:
    """`kafka://h1:9092;kafka://h2:9092` -> ["h1:9092", "h2:9092"]."""
    servers = []
    for part in broker_url.split(";"):
        part = part.strip()
        if "://" in part:
            part = part.split("://", 1)[1]
        servers.append(part.rstrip("/") if ":" in part else f"{part}:9092")
    return servers
