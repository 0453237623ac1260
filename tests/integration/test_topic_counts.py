"""Records per topic (`relay topics describe`, the bench's records per event): counted from end
offsets confirmed with a fetch, because the embedded broker reports the start of the last batch
as the end when that batch holds several records."""

from __future__ import annotations

import asyncio

import pytest

from app.broker import record_counts
from app.catalog import describe_topics, load_catalog
from app.config import load_settings
from app.localstack import produce

pytestmark = pytest.mark.integration


def test_records_are_counted_to_the_true_end_of_each_topic(broker):
    n = 37  # sent with a linger: several records per batch
    asyncio.run(produce(broker.bootstrap, [("ingress.dlq", f"k{i % 3}".encode(), b"{}")
                                           for i in range(n)]))
    assert asyncio.run(record_counts(broker.bootstrap, ["ingress.dlq", "no.such.topic"])) == \
        {"ingress.dlq": n}
    assert asyncio.run(record_counts(broker.bootstrap))["ingress.dlq"] == n

    specs = load_catalog(load_settings({"BROKER_URL": broker.url}))
    rows = {row["name"]: row for row in asyncio.run(describe_topics(broker.bootstrap, specs))}
    assert rows["ingress.dlq"]["messages"] == n
    assert rows["ingress.dlq"]["exists"] and rows["ingress.dlq"]["broker_partitions"] == \
        specs["ingress.dlq"].partitions
