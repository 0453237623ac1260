"""Delivery guarantees through the sandbox: retries under injected failures deliver each item
exactly once, rejected credentials pause instead of dead-lettering, and a customer's later item
waits behind their earlier one that is being retried."""

import asyncio
import os
import subprocess
import sys
import time
import uuid

import httpx
import orjson
import pytest

from app.accounting import outcomes_in
from app.config import load_settings
from app.localstack import produce, read_topic
from app.normalize import normalize_bytes
from app.routing import load_rules, plan
from tests.integration.conftest import wait_until
from tests.integration.test_vertical_slice import tier_move

FAST_RETRIES = {"RETRY_BASE_S": "0.05", "RETRY_MAX_S": "0.3", "BREAKER_COOLDOWN_S": "2",
                "SINK_BATCH_WINDOW_S": "0.05", "TOPIC_RETRY_MAX": "8"}


@pytest.fixture(scope="module")
def worker(start_worker):
    return start_worker(**FAST_RETRIES)


@pytest.fixture(autouse=True)
def clean_sandbox(sandbox):
    sandbox.reset()
    yield
    sandbox.clear_faults()


def tier_moves(n: int) -> list[tuple[str, bytes, bytes]]:
    records = []
    for _ in range(n):
        customer = f"G-{uuid.uuid4().hex[:10]}"
        records.append(("air.outbound", customer.encode(),
                        orjson.dumps(tier_move(customer, str(uuid.uuid4())))))
    return records


def planned_ids(records, destinations: set[str]) -> set[str]:
    settings = load_settings()
    rules = load_rules(settings.routes_file)
    ids = set()
    for _topic, _key, value in records:
        for env in normalize_bytes("air", value, {}, settings):
            ids |= {d["delivery_id"] for d in plan(rules, env) if d["destination"] in destinations}
    return ids


def outcomes(broker, seconds: float = 3.0) -> list[dict]:
    async def collect():
        return [o async for _t, r in read_topic(broker.bootstrap, ["relay.outcomes"],
                                                idle_timeout_s=seconds) for o in outcomes_in(r)]
    return asyncio.run(collect())


def test_failures_are_retried_until_each_item_is_accepted_exactly_once(broker, sandbox, worker):
    sandbox.faults(destination="braze", error_rate=0.3, statuses=[429, 500, 503])
    sandbox.faults(destination="insider", error_rate=0.3, statuses=[500, 502])
    records = tier_moves(60)
    expected = planned_ids(records, {"braze", "insider"})
    assert len(expected) == 60 * 3
    asyncio.run(produce(broker.bootstrap, records))
    wait_until(lambda: expected <= set(sandbox.ids()), 90, what="every delivery accepted")
    time.sleep(1.0)  # anything still in flight would show up as a repeat now
    accepted = sandbox.ids()
    assert {i: accepted[i] for i in expected if accepted[i] != 1} == {}


def test_rejected_credentials_pause_the_destination_without_dead_letters(broker, sandbox, worker):
    sandbox.faults(destination="insider", error_rate=1.0, statuses=[403])
    records = tier_moves(5)
    expected = planned_ids(records, {"insider"})
    asyncio.run(produce(broker.bootstrap, records))
    metrics_url = f"{worker.url}/metrics"
    wait_until(lambda: 'relay_destination_auth_failures_total{destination="insider"}'
               in httpx.get(metrics_url).text, 30, what="auth failure metric")
    time.sleep(3)
    sandbox.clear_faults()
    wait_until(lambda: expected <= set(sandbox.ids()), 60, what="insider drained after the pause")
    dead = [r for r in outcomes(broker) if r.get("destination") == "insider"
            and r.get("status") == "dead_lettered" and r.get("delivery_id") in expected]
    assert dead == []


def test_a_customers_later_item_waits_behind_their_item_in_retry(broker, sandbox, worker):
    customer = f"O-{uuid.uuid4().hex[:10]}"
    first = ("air.outbound", customer.encode(), orjson.dumps(tier_move(customer, str(uuid.uuid4()))))
    second = ("air.outbound", customer.encode(), orjson.dumps(tier_move(customer, str(uuid.uuid4()))))
    first_ids = planned_ids([first], {"braze"})
    second_ids = planned_ids([second], {"braze"})
    sandbox.faults(destination="braze", error_rate=1.0, statuses=[503])
    asyncio.run(produce(broker.bootstrap, [first]))

    def first_in_retry():
        return any(r.get("status") == "retrying" and r.get("delivery_id") in first_ids
                   for r in outcomes(broker, 1.0))
    wait_until(first_in_retry, 30, what="first item in the retry lane")
    asyncio.run(produce(broker.bootstrap, [second]))
    time.sleep(1.5)  # the main lane would have delivered the second item by now
    sandbox.clear_faults()
    wait_until(lambda: (first_ids | second_ids) <= set(sandbox.ids()), 60, what="both delivered")
    order = []
    for call in sandbox.calls("braze"):
        ids = call.get("relay_ids") or []
        order += [i for i in ids if i in first_ids | second_ids]
    assert order, "sandbox calls carry no relay ids"
    assert max(order.index(i) for i in first_ids) < min(order.index(i) for i in second_ids)


def relay_cli(broker, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BROKER_URL": broker.url}
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, env=env,
                          timeout=120)


def test_replay_skips_what_was_delivered_and_resend_sends_again(broker, sandbox, worker):
    records = tier_moves(8)
    old = json_with_date(tier_moves(1)[0], "2025-01-05T08:00:00")
    expected = planned_ids(records, {"braze", "insider"})
    asyncio.run(produce(broker.bootstrap, records + [old]))
    wait_until(lambda: expected <= set(sandbox.ids()), 60, what="first delivery")

    dry = relay_cli(broker, "replay", "--topic", "air.outbound", "--dry-run",
                    "--since", "2025-01-01T00:00:00Z", "--until", "2025-02-01T00:00:00Z")
    assert dry.returncode == 0, dry.stderr
    assert "selected: 1" in dry.stdout.decode() and "planned braze.track_event: 1" in dry.stdout.decode()

    plain = relay_cli(broker, "replay", "--topic", "air.outbound")
    assert plain.returncode == 0, plain.stderr
    wait_until(lambda: sum(1 for r in outcomes(broker, 1.0) if r.get("status") == "duplicate_skipped"
                           and r.get("delivery_id") in expected) >= len(expected),
               60, what="replayed deliveries skipped by the ledger")
    assert all(sandbox.ids()[i] == 1 for i in expected)

    resend = relay_cli(broker, "replay", "--topic", "air.outbound", "--resend",
                       "--since", "2025-01-01T00:00:00Z", "--until", "2025-02-01T00:00:00Z")
    # the plain replay put a second copy of the old record in the window: same event, same ids
    assert resend.returncode == 0 and "sent: 2" in resend.stdout.decode(), resend.stdout
    old_ids = planned_ids([old], {"braze"})
    def resent():
        return [n for i, n in sandbox.ids().items()
                if "#resend:" in i and i.split("#resend:")[0] in old_ids]
    counts = wait_until(lambda: len(resent()) == len(old_ids) and resent(), 60, what="resent")
    time.sleep(1.0)
    # both copies share one resend id: each of the event's deliveries is sent once more
    assert len(old_ids) == 2 and resent() == counts == [1, 1]


def test_dead_letters_can_be_shown_and_redriven(broker, sandbox, worker):
    sandbox.faults(destination="insider", error_rate=1.0, statuses=[400])
    records = tier_moves(3)
    expected = planned_ids(records, {"insider"})
    asyncio.run(produce(broker.bootstrap, records))
    wait_until(lambda: sum(1 for r in outcomes(broker, 1.0) if r.get("status") == "dead_lettered"
                           and r.get("delivery_id") in expected) == 3, 60, what="dead letters")
    shown = relay_cli(broker, "dlq", "show")
    assert shown.returncode == 0 and "insider.upsert: http_400" in shown.stdout.decode()
    sandbox.clear_faults()
    redriven = relay_cli(broker, "dlq", "redrive", "--destination", "insider", "--reason", "http_400")
    assert redriven.returncode == 0 and "re-driven: 3" in redriven.stdout.decode(), redriven.stdout
    wait_until(lambda: expected <= set(sandbox.ids()), 60, what="re-driven deliveries accepted")


def test_replay_of_a_non_ingress_topic_is_refused_in_one_line(broker):
    result = relay_cli(broker, "replay", "--topic", "deliveries.braze")
    assert result.returncode == 2
    assert len(result.stderr.decode().strip().splitlines()) == 1


def json_with_date(record, event_date: str):
    topic, key, value = record
    doc = orjson.loads(value)
    doc["headers"]["eventDate"] = event_date
    return topic, key, orjson.dumps(doc)
