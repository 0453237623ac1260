"""The topic catalog and its JSON Schemas: complete, valid, and matching what the code produces."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from app.config import DESTINATIONS, Settings
from app.envelope import Rejected
from app.normalize import SOURCE_BY_TOPIC, SOURCES, normalize_bytes
from app.samples import labeled_sample_records

TOPICS = Path(__file__).resolve().parent.parent.parent / "topics"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CATALOG = yaml.safe_load((TOPICS / "catalog.yaml").read_text())
SETTINGS = Settings()


def schema(path: str) -> dict:
    return json.loads((TOPICS / path).read_text())


def validator(path: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema(path),
                                           format_checker=jsonschema.FormatChecker())


BY_NAME = {t["name"]: t for t in CATALOG["topics"]}
ENVELOPE = validator("schemas/envelope.json")


def test_every_topic_is_listed():
    expected = {topic for topic, _ in SOURCES.values()} | {
        "ingress.dlq", "events.normalized", "deliveries.dlq", "feedback.insider",
        "relay.outcomes", "identity.quarantine", "identity.claims", "identity.profiles",
        "deliveries.deferred"}
    for dest in DESTINATIONS:
        expected |= {f"deliveries.{dest}", f"deliveries.retry.{dest}"}
    assert set(BY_NAME) == expected
    assert len(CATALOG["topics"]) == len(BY_NAME)  # no duplicates


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_topic_entry(name):
    entry = BY_NAME[name]
    assert entry["key"]
    assert entry.get("partitions", None) is None or int(entry["partitions"]) > 0
    assert entry["cleanup_policy"] in {"delete", "compact"}
    assert entry["retention_ms"] is None or entry["retention_ms"] > 0
    assert (TOPICS / entry["schema"]).is_file()
    jsonschema.Draft202012Validator.check_schema(schema(entry["schema"]))
    if entry["kind"] == "ingress":
        assert SOURCES[entry["source"]][0] == name


def test_every_schema_file_is_valid_and_used():
    used = {entry["schema"] for entry in CATALOG["topics"]} | {CATALOG["bundle_schema"]}
    for path in (TOPICS / "schemas").glob("*.json"):
        doc = json.loads(path.read_text())
        assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(doc)
        assert f"schemas/{path.name}" in used, path.name


def fixture_envelopes():
    for source in SOURCES:
        for path in sorted((FIXTURES / source).glob("*.json")):
            if path.name.endswith(".headers.json") or path.stem.startswith("bad_"):
                continue
            yield from normalize_bytes(source, path.read_bytes(), {}, SETTINGS)


def test_normalizer_output_matches_envelope_schema():
    count = 0
    for envelope in fixture_envelopes():
        errors = [e.message for e in ENVELOPE.iter_errors(envelope)]
        assert not errors, (envelope["type"], errors)
        count += 1
    assert count > 50


def test_samples_match_topic_schemas_and_envelopes():
    validators = {topic: validator(BY_NAME[topic]["schema"]) for topic in SOURCE_BY_TOPIC}
    for topic, _key, value, valid in labeled_sample_records(600, seed=7, invalid_share=0.05):
        if not valid:
            continue
        doc = json.loads(value)
        errors = [e.message for e in validators[topic].iter_errors(doc)]
        assert not errors, (topic, errors)
        for envelope in normalize_bytes(SOURCE_BY_TOPIC[topic], value, {}, SETTINGS):
            assert not list(ENVELOPE.iter_errors(envelope))


def test_derived_records_match_their_schemas():
    [envelope] = normalize_bytes("maac", (FIXTURES / "maac" / "first_open.json").read_bytes(),
                                 {}, SETTINGS)
    delivery = {"delivery_id": f"insider:upsert:{envelope['event_id']}", "destination": "insider",
                "action": "upsert", "event_id": envelope["event_id"],
                "customer_key": envelope["customer_key"], "route": "line-feedback",
                "params": {}, "envelope": envelope, "attempt": 0, "not_before": 0.0}
    validator("schemas/delivery.json").validate(delivery)
    validator("schemas/feedback.insider.json").validate(envelope)
    validator("schemas/deliveries.dlq.json").validate(
        {"delivery": delivery, "reason": "http 400", "attempts": 1,
         "last_response": {"status": 400, "body": {"error": "bad"}},
         "at": "2026-11-20T10:00:00Z"})
    try:
        normalize_bytes("air", b"nope", {}, SETTINGS)
    except Rejected as exc:
        validator("schemas/ingress.dlq.json").validate(
            {"reason_code": exc.code, "reason": exc.detail, "source": "air",
             "topic": "air.outbound", "partition": 0, "offset": 17, "key": None,
             "value": "bm9wZQ==", "headers": [["x", "eQ=="]], "at": "2026-11-20T10:00:00Z"})
    outcome = {"stage": "deliver", "event_id": envelope["event_id"], "destination": "insider",
               "status": "delivered", "at": "2026-11-20T10:00:00Z"}
    outcomes = validator("schemas/relay.outcomes.json")
    outcomes.validate({"batch": [outcome, {**outcome, "status": "dead_lettered"}]})
    outcomes.validate(outcome)
    assert not outcomes.is_valid({"batch": [{"stage": "deliver"}]})  # no status, no time


async def test_a_bundle_matches_the_bundle_schema_and_its_items_their_topic_schema():
    import orjson

    from app.bundles import Bundler, docs, items

    sent = []

    async def send(topic, partition, value):
        sent.append((topic, partition, value))
        return asyncio.get_running_loop().create_future()

    [envelope] = normalize_bytes("maac", (FIXTURES / "maac" / "first_open.json").read_bytes(),
                                 {}, SETTINGS)
    bundler = Bundler(send, lambda topic, key: 0)
    bundler.add("identity.profiles", b"p-1", orjson.dumps(envelope))
    bundler.add("identity.profiles", b"p-1", orjson.dumps({"into": "p-0"}),
                headers=[("relay-identity-op", b"merge")])
    await bundler.flush()
    [(topic, partition, value)] = sent
    validator(CATALOG["bundle_schema"]).validate(orjson.loads(value))
    item_schema = validator(BY_NAME[topic]["schema"])
    assert [item_schema.is_valid(doc) for doc in docs(value)] == [True, True]
    record = type("Record", (), {"topic": topic, "partition": 0, "offset": 9, "key": None,
                                 "headers": [], "value": value})
    merge = items(record)[1]
    assert (merge.key, merge.headers, merge.doc) == (b"p-1", [("relay-identity-op", b"merge")],
                                                    {"into": "p-0"})
