"""The shortcuts (app/agents/shortcut.py) on the embedded broker: once the identity agent has
caught up with a partition, ingress resolves that partition's envelopes itself and they skip
`events.normalized`, and a new customer's lookups and binds skip `identity.claims`; once the
route agent has caught up with a profile's partition, ingress routes the profile's events itself
and they skip `identity.profiles`. A customer's events still reach the destination once each and
in order, across the switch from the topics to the shortcuts."""

import asyncio
import re
import time
import uuid

import httpx
import orjson
import pytest

from app.broker import free_port, record_counts
from app.localstack import produce
from app.partitioner import kafka_hash
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

ROUTES = """
routes:
  - name: journey-braze-order-test
    when: {type: "journey.*"}
    deliver:
      - destination: braze
        action: track_event
        params:
          name: journey_step
          properties: {n: "$.payload.variables.n"}
"""


@pytest.fixture(scope="module")
def routes(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("routes") / "routes.yaml"
    path.write_text(ROUTES)
    return str(path)


def trigger(customer: str, n: int) -> tuple[str, bytes, bytes]:
    return ("journey.triggers", customer.encode(), orjson.dumps({
        "trigger_id": f"t-{customer}-{n}", "journey": {"id": "j1", "name": "Order Test"},
        "customer": {"customer_id": customer, "braze_external_id": f"B-{customer}"},
        "variables": {"n": n}, "occurred_at": "2026-11-24T10:00:00Z"}))


def braze_sequence(sandbox, customer: str) -> list[int]:
    return [e["properties"]["n"] for call in sandbox.calls("braze")
            for e in (call.get("body") or {}).get("events", [])
            if e.get("external_id") == f"B-{customer}" and e.get("name") == "journey_step"]


def shortcut_counts(worker, topic: str = "events.normalized") -> dict[str, float]:
    text = httpx.get(f"{worker.url}/metrics", timeout=5).text
    return {path: float(value) for path, name, value in re.findall(
        r'^relay_identity_shortcut_total\{path="(\w+)",topic="([\w.]+)"\} ([0-9.e+]+)$',
        text, re.M) if name == topic}


def partition(key: str, partitions: int = 4) -> int:
    return kafka_hash(key.encode()) % partitions


SHORTCUT_TOPICS = ["events.normalized", "identity.claims", "identity.profiles"]


def records(broker, topics=SHORTCUT_TOPICS) -> dict[str, int]:
    return asyncio.run(record_counts(broker.bootstrap, topics))


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_events_skip_the_topic_once_caught_up_and_keep_their_order(
        broker, sandbox, start_worker, routes, store):
    # RocksDB keeps one database per table partition and picks it from the current event, which
    # is an ingress record here: the shortcut must read the identity partition's own database.
    worker = start_worker(port=free_port(), STORE=store, APP_ID=f"shortcut-{store[:3]}",
                          ROUTES_FILE=routes)
    customers = [f"C-{uuid.uuid4().hex[:8]}" for _ in range(6)]
    # From a fresh worker: every partition starts closed, so the first events take the topic.
    asyncio.run(produce(broker.bootstrap, [trigger(c, n) for n in range(20) for c in customers]))
    for c in customers:
        wait_until(lambda c=c: len(braze_sequence(sandbox, c)) >= 20, 90, what=f"{c} delivered")
    # A worker of a new group also reads what the module's earlier workers were sent: let it
    # settle so the figures below are the second wave's alone.
    seen = [records(broker)]

    def settled():
        time.sleep(1.0)
        seen.append(records(broker))
        return seen[-1] == seen[-2]

    wait_until(settled, 60, what="the worker idle")
    counts = seen[-1]
    before = shortcut_counts(worker)
    assert before.get("topic", 0) >= 1  # each partition's first envelope went through the topic
    profiles_before = shortcut_counts(worker, "identity.profiles")
    assert profiles_before.get("topic", 0) >= 1

    asyncio.run(produce(broker.bootstrap, [trigger(c, n) for n in range(20, 40)
                                           for c in customers]))
    for c in customers:
        wait_until(lambda c=c: len(braze_sequence(sandbox, c)) >= 40, 90, what=f"{c} delivered")
        assert braze_sequence(sandbox, c) == list(range(40)), c  # once each, in order
    after = shortcut_counts(worker)
    # Caught up: the second wave was resolved by ingress and never written to the topic.
    assert after["local"] - before.get("local", 0) == 20 * len(customers)
    assert after.get("topic", 0) == before.get("topic", 0)
    # ... and routed by ingress too, each profile's first event having opened its partition.
    routed = shortcut_counts(worker, "identity.profiles")
    assert routed["local"] - profiles_before.get("local", 0) == 20 * len(customers)
    assert routed.get("topic", 0) == profiles_before.get("topic", 0)
    # ... having found every profile through its own identity partition: no hop to another one,
    # and no record for the route stage either.
    assert records(broker) == counts

    # New customers: the lookup of their other identifier and the binds of both identifiers
    # run at those identifiers' partitions here (identity.claims), no record written either.
    # (Drawn so that their identifiers fall in partitions the waves above opened: a partition
    # nobody sent anything to yet takes its first record through the topic.)
    claims_before = shortcut_counts(worker, "identity.claims").get("local", 0)
    opened = {partition(f"customer_id:{c}") for c in customers}
    bound = opened | {partition(f"braze_external_id:B-{c}") for c in customers}
    newcomers = []
    while len(newcomers) < 6:
        c = f"N-{uuid.uuid4().hex[:8]}"
        if partition(f"customer_id:{c}") in opened and partition(f"braze_external_id:B-{c}") in bound:
            newcomers.append(c)
    asyncio.run(produce(broker.bootstrap, [trigger(c, n) for n in range(3) for c in newcomers]))
    for c in newcomers:
        wait_until(lambda c=c: len(braze_sequence(sandbox, c)) >= 3, 90, what=f"{c} delivered")
        assert braze_sequence(sandbox, c) == [0, 1, 2], c
    wait_until(lambda: shortcut_counts(worker, "identity.claims").get("local", 0)
               >= claims_before + 3 * len(newcomers), 30, what="lookups and binds run here")
    # (A new profile's partition may be one none of the waves opened: not counted here.)
    identity_topics = SHORTCUT_TOPICS[:2]
    assert records(broker, identity_topics) == {t: counts[t] for t in identity_topics}
    worker.stop()
