"""Operations against a real worker: lag and ops metrics on /metrics, the Grafana dashboard's
queries, per-event log context, and no personal data in logs or metrics."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.config import DESTINATIONS
from app.localstack import WorkerProcess, base_env, produce
from app.samples import sample_records

from .conftest import wait_until

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/dashboards/loyalty-relay.json"
# Metrics another developer adds with the identity work (app/metrics.py, by these names). Until
# they exist the dashboard's identity panels show "no data"; every other name must be exported.
AWAITING = {"relay_identity_merges_total", "relay_identity_quarantined_total"}

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
LINE_UID = re.compile(r"U[0-9a-f]{32}")
PHONE = re.compile(r"\+\d{9,15}")

# Hand-crafted records full of personal data and secrets, valid and invalid.
SECRETS = ["sk_live_4eC39HqLyjWDarjtT1zdp7dc", "Zm9vYmFyLXNlY3JldC10b2tlbi0xMjM0NQ",
           "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjdXN0LTEifQ.c2lnbmF0dXJl"]
CRAFTED_PII = ["leak.me@example.org", "+886912000111", "U0123456789abcdef0123456789abcdef",
               "mary.chen+vip@shop.example.tw", "+819012345678"]


def crafted_records() -> list[tuple[str, bytes, bytes]]:
    email, phone, uid, email2, phone2 = CRAFTED_PII
    token, api_key, jwt = SECRETS
    identity = {"update_id": "upd-pii-1", "source": "salesforce",
                "identifiers": {"customer_id": "C-PII-1", "email": email, "phone": phone,
                                "line_uid": uid},
                "attributes": {"first_name": "Mary", "note": f"call {phone2}, mail {email2}",
                               "token": token, "api_key": api_key},
                "consents": {"email": True, "sms": True}, "updated_at": "2026-11-20T10:00:00Z"}
    journey = {"trigger_id": "trg-pii-1", "journey": {"id": "j-pii", "name": "Cart Abandoned"},
               "step": {"id": "step-1", "name": "LINE push"},
               "customer": {"customer_id": "C-PII-1", "line_uid": uid, "email": email},
               "maac": {"template_id": 1001, "event_id": 501},
               "variables": {"first_name": "Mary", "coupon": f"Bearer {jwt}", "phone": phone2},
               "occurred_at": "2026-11-20T10:00:00Z"}
    maac = {"timestamp": 1795000000, "topic": "message.first_open",
            "idempotency_key": "idem-pii-1",
            "data": {"message_type": "openapi", "message_id": 501, "line_uid": uid,
                     "customer_id": "C-PII-1"}}
    bad = f'{{"broken": "{email} {phone} {uid} Authorization: Bearer {jwt}'.encode()
    key = b"C-PII-1"
    return [("identity.updates", key, orjson.dumps(identity)),
            ("journey.triggers", key, orjson.dumps(journey)),
            ("maac.results", key, orjson.dumps(maac)),
            ("journey.triggers", key, bad),
            ("identity.updates", key, orjson.dumps({**identity, "identifiers": email}))]


def scrape(url: str) -> str:
    return httpx.get(f"{url}/metrics", timeout=10).text


def samples(text: str, name: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name]


def total(text: str, name: str, **labels: str) -> float:
    return sum(s.value for s in samples(text, name)
               if all(s.labels.get(k) == v for k, v in labels.items()))


def declared(text: str) -> set[str]:
    """Series names the worker declares (`# TYPE` lines), with a histogram's _bucket/_sum/_count:
    a labelled metric with no observation yet is declared but has no samples."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        names |= ({f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram"
                  else {name})
    return names


@pytest.fixture(scope="module")
def worker(broker, sandbox, worker_port, tmp_path_factory):
    """One worker at debug level (the most log lines to scan), with a short breaker cool-down and
    Faust's own Prometheus monitor on."""
    env = base_env(broker.url, sandbox.credentials(), LOG_LEVEL="debug", BREAKER_COOLDOWN_S="3",
                   FAUST_METRICS="true")
    proc = WorkerProcess(env, str(tmp_path_factory.mktemp("ops-worker")), web_port=worker_port)
    proc.start()
    try:
        asyncio.run(proc.wait_ready(90))
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def traffic(broker, worker):
    """Sample traffic plus the hand-crafted personal-data records; returns the sent records."""
    records = sample_records(400, seed=11, base_time=datetime.now(UTC)) + crafted_records()
    asyncio.run(produce(broker.bootstrap, records))
    wait_until(lambda: total(scrape(worker.url), "relay_events_consumed_total") >= len(records),
               90, what="every record consumed")
    return records


def test_lag_metrics_cover_assigned_partitions_and_settle_at_zero(worker, traffic):
    def caught_up():
        text = scrape(worker.url)
        lags = samples(text, "relay_consumer_lag_messages")
        topics = {s.labels["topic"] for s in lags}
        if not {"air.outbound", "events.normalized", "deliveries.braze"} <= topics:
            return None
        if any(s.value for s in lags) or any(
                s.value for s in samples(text, "relay_consumer_lag_seconds")):
            return None
        return text

    text = wait_until(caught_up, 60, 0.5, "lag series present and at zero")
    lags = samples(text, "relay_consumer_lag_messages")
    # every series is a catalog topic and a partition number: no changelogs, no internal topics
    assert all(not s.labels["topic"].endswith("-changelog") for s in lags)
    assert all(s.labels["partition"].isdigit() for s in lags)
    depth = {s.labels["destination"] for s in samples(text, "relay_retry_topic_depth_messages")}
    assert depth == set(DESTINATIONS)
    assert total(text, "relay_rebalances_total") >= 1
    assert total(text, "relay_gc_frozen_objects") > 10_000  # start-up's heap, frozen (app/heap.py)
    assert total(text, "faust_messages_received_total") >= len(traffic)  # Faust's own sensor
    assert samples(text, "relay_event_age_seconds_count")
    assert samples(text, "relay_delivery_batch_size_count")


def test_lag_grows_in_messages_and_seconds_while_a_destination_is_paused(
        broker, sandbox, worker, traffic):
    topic = "deliveries.braze"
    sandbox.faults(destination="braze", error_rate=1.0, statuses=[401])
    try:
        asyncio.run(produce(broker.bootstrap,
                            sample_records(600, seed=12, base_time=datetime.now(UTC))))

        def lagging():
            text = scrape(worker.url)
            messages = total(text, "relay_consumer_lag_messages", topic=topic)
            seconds = max((s.value for s in samples(text, "relay_consumer_lag_seconds")
                           if s.labels["topic"] == topic), default=0)
            paused = total(text, "relay_destination_auth_failures_total", destination="braze")
            # lag can show before the first 401 comes back (a batch waiting on its window)
            return (messages, seconds, text) if messages > 0 and seconds >= 2 and paused else None

        messages, seconds, text = wait_until(lagging, 60, 0.5, f"lag on {topic} while paused")
        assert total(text, "relay_destination_auth_failures_total", destination="braze") >= 1
        assert total(text, "relay_circuit_state", destination="braze") == 3  # paused
    finally:
        sandbox.clear_faults()
    wait_until(lambda: total(scrape(worker.url), "relay_consumer_lag_messages", topic=topic) == 0,
               90, 0.5, f"{topic} drained after the credentials work again")


def test_every_dashboard_query_uses_metrics_the_worker_exports(worker, traffic):
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 30
    rows = {p["title"] for p in dashboard["panels"] if p["type"] == "row"}
    assert {"Ingress", "Routing", "Lag", "Errors", "Identity"} <= rows
    assert any(p.get("repeat") == "destination" for p in dashboard["panels"])
    used = set()
    for expr in exprs:
        used |= set(re.findall(r"\b((?:relay|faust)_[a-z0-9_]+)\b", expr))
    assert used
    exported = declared(scrape(worker.url))
    missing = sorted(used - exported - AWAITING)
    assert not missing, f"dashboard queries metrics the worker does not export: {missing}"
    for name in AWAITING & exported:  # once the identity metrics land, they are checked too
        assert name in used


def test_no_personal_data_or_secrets_in_logs_or_metrics(sandbox, worker, traffic):
    values = set(CRAFTED_PII) | set(SECRETS)
    for _topic, _key, raw in traffic:
        text = raw.decode(errors="replace")
        values |= set(EMAIL.findall(text)) | set(LINE_UID.findall(text))
        values |= {p for p in PHONE.findall(text) if len(p) >= 10}
    values |= {v for k, v in sandbox.credentials().items()
               if any(s in k for s in ("TOKEN", "KEY", "SECRET", "AUTH")) and len(v) >= 8}
    assert len(values) > 50  # the scan has something to find
    log = Path(worker.log_path).read_text(errors="replace")
    metrics = scrape(worker.url)
    assert "ingress.normalized" in log and "relay_events_consumed_total" in metrics
    leaks = sorted(v for v in values if v in log)
    assert not leaks, f"personal data or secrets in the worker log: {leaks[:5]}"
    leaks = sorted(v for v in values if v in metrics)
    assert not leaks, f"personal data or secrets on /metrics: {leaks[:5]}"
    # labels carry short codes only: no free text, ids or personal data (Faust's stream label
    # is its agent's topic list: long, but fixed)
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            pattern = (r"[A-Za-z0-9_.:+\-/ ]{0,80}" if sample.name.startswith("relay_")
                       else r"[A-Za-z0-9_.:+\-/ ,]{0,300}")
            for label, value in sample.labels.items():
                assert re.fullmatch(pattern, value), (sample.name, label, value)


def test_log_lines_about_an_event_carry_its_ids(worker, traffic):
    lines = [json.loads(line) for line in Path(worker.log_path).read_text().splitlines()
             if line.startswith("{")]
    normalized = [r for r in lines if r.get("event") == "ingress.normalized"]
    routed = [r for r in lines if r.get("event") == "route.planned"]
    assert normalized and routed
    assert all(r.get("event_id") and r.get("origin") for r in normalized + routed)
    by_source = {}
    for r in normalized:
        by_source.setdefault(r["source"], []).append(r)
    assert all(r.get("eesEventId") for r in by_source["air"])
    assert all(r.get("journey_id") for r in by_source["journey"])
    assert any(r.get("idempotency_key") == "idem-pii-1" for r in by_source["maac"])
    assert any(r.get("journey_id") == "j-pii" for r in routed)
    rejected = [r for r in lines if r.get("event") == "ingress.rejected"]
    assert rejected and all(r.get("origin") and r.get("reason") for r in rejected)
