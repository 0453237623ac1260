"""Sample traffic: deterministic, varied, realistic, and mostly valid."""

from __future__ import annotations

import collections

import orjson

from app.config import Settings
from app.envelope import Rejected
from app.normalize import SOURCE_BY_TOPIC, normalize_bytes
from app.normalize.common import clean_phone
from app.samples import (
    AIR_EVENT_NAMES,
    INGRESS_TOPICS,
    labeled_sample_records,
    make_customer,
    realistic_air,
    sample_records,
)

SETTINGS = Settings()


def test_deterministic_per_seed():
    assert sample_records(200, seed=3) == sample_records(200, seed=3)
    assert sample_records(200, seed=3) != sample_records(200, seed=4)
    assert len(sample_records(57)) == 57


def test_mix_validity_and_types():
    records = labeled_sample_records(1500, seed=11, invalid_share=0.02)
    topics = collections.Counter(t for t, *_ in records)
    assert set(topics) == set(INGRESS_TOPICS)
    types = collections.Counter()
    air_names = collections.Counter()
    invalid = 0
    customers = collections.defaultdict(set)
    for topic, _key, value, valid in records:
        try:
            envelopes = normalize_bytes(SOURCE_BY_TOPIC[topic], value, {}, SETTINGS)
        except Rejected:
            assert not valid, (topic, value[:200])
            invalid += 1
            continue
        assert valid, (topic, value[:200])
        for env in envelopes:
            types[env["type"]] += 1
            cid = env["identities"].get("customer_id")
            if cid:
                customers[cid].add(topic)
        if topic == "air.outbound":
            air_names[orjson.loads(value)["headers"]["eventName"]] += 1
            assert 1000 <= len(value) <= 6000
    assert 0 < invalid < 0.05 * len(records)
    for expected in ("loyalty.tier.moved", "loyalty.programme.joined", "pos.transaction.settled",
                     "loyalty.consumer.updated", "journey.cart_abandoned", "audience.entered",
                     "identity.updated", "line.opened", "membership.subscribed"):
        assert types[expected], expected
    assert len(air_names) >= 15
    assert any(len(s) >= 3 for s in customers.values())  # customers shared across sources


def test_basket_sizes_and_image_urls():
    sizes = set()
    images = 0
    for topic, _, value, _valid in labeled_sample_records(800, seed=5, invalid_share=0):
        doc = orjson.loads(value)
        if topic == "air.outbound" and doc["headers"]["eventName"] == "POSCONNECT.WALLET.SETTLE":
            for op in doc["atomicOperations"]:
                if op["objectType"] == "walletTransactionEntity":
                    sizes.add(len(op["objectValue"]["basket"]["contents"]))
        if topic == "journey.triggers" and str(doc.get("variables", {}).get("image_url", "")
                                                ).endswith(".jpg"):
            images += 1
    assert min(sizes) >= 1 and max(sizes) <= 8 and len(sizes) >= 4
    assert images > 10


def test_phones_are_valid_in_three_countries():
    import random

    rng = random.Random(1)
    countries = set()
    for index in range(300):
        phone = clean_phone(make_customer(rng, index).phone, "TW")
        assert phone, index
        countries.add("TW" if phone.startswith("+886") else "JP" if phone.startswith("+81")
                      else "US" if phone.startswith("+1") else phone[:4])
    assert countries == {"TW", "JP", "US"}


def test_realistic_air_builder():
    for name in AIR_EVENT_NAMES:
        doc = realistic_air(name)
        assert doc["headers"]["eventName"] == name
        assert doc == realistic_air(name)  # deterministic
    doc = realistic_air("TIER.MEMBERSHIP.MOVE", customer_id="X1", headers={"unitId": "9"})
    assert doc["headers"]["unitId"] == "9"
    ids = next(iter(doc["enrichmentData"].values()))["identities"]
    assert any(i["value"] == "X1" for i in ids)
