"""Property: whatever JSON object arrives, a normalizer returns envelopes or raises Rejected."""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.config import Settings
from app.envelope import Rejected
from app.normalize import SOURCES
from app.samples import realistic_air

SETTINGS = Settings()

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(
    max_size=12)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=10), inner, max_size=4), max_leaves=20)

KEYS = ["headers", "eventName", "eesEventId", "eventDate", "atomicOperations", "objectType",
        "objectValue", "enrichmentData", "identities", "type", "value", "walletId", "request",
        "body", "trigger_id", "journey", "customer", "phone", "email", "action_id",
        "action_type", "member", "audience", "action", "platform", "identifiers", "message_id",
        "kind", "offer", "points", "topic", "data", "line_uid", "timestamp", "occurred_at",
        "variables", "maac", "updated_at", "balances", "tierId", "basket", "contents"]
keyed = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=6), max_leaves=30)
objects = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), json_values | keyed,
                          max_size=8)


def check(source: str, value: dict) -> None:
    fn = SOURCES[source][1].unguarded  # the real code, without the safety net
    try:
        result = fn(value, {}, SETTINGS)
    except Rejected as exc:
        assert exc.code in {"invalid_json", "not_an_object", "missing_field", "invalid_value",
                            "unsupported"}
        return
    assert isinstance(result, list) and all(isinstance(e, dict) for e in result)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=st.sampled_from(sorted(SOURCES)), value=objects)
def test_arbitrary_objects(source, value):
    check(source, value)


BASE_AIR = realistic_air("POSCONNECT.WALLET.SETTLE", seed=1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path_index=st.integers(0, 10_000), replacement=json_values | keyed)
def test_air_with_one_field_replaced(path_index, replacement):
    doc = copy.deepcopy(BASE_AIR)
    paths = []

    def walk(node, trail):
        if isinstance(node, dict):
            for k, v in node.items():
                paths.append(trail + [k])
                walk(v, trail + [k])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                paths.append(trail + [i])
                walk(v, trail + [i])

    walk(doc, [])
    path = paths[path_index % len(paths)]
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = replacement
    check("air", doc)
