"""`relay chaos` counts a delivery accepted twice as a duplicate unless its action is idempotent:
re-sending those after an unanswered request or a crash is allowed (app/delivery/core.py)."""

import pytest

from app.chaos import is_idempotent
from app.routing import delivery_id


@pytest.mark.parametrize(("destination", "action", "expected"), [
    ("sessionm", "segment_tag", True),
    ("sessionm", "tag", True),
    ("braze", "track_attributes", True),
    ("air", "trigger", True),
    ("braze", "track_event", False),
    ("maac", "push", False),
    ("attentive", "text", False),
    ("nowhere", "push", False),
])
def test_repeats_of_idempotent_actions_are_not_duplicates(destination, action, expected):
    assert is_idempotent(delivery_id(destination, action, "e-1", "rule-1")) is expected
    assert is_idempotent(delivery_id(destination, action, "e-1", "rule-1", resend="r1")) is expected


def test_a_malformed_delivery_id_counts_as_a_duplicate():
    assert not is_idempotent("")
    assert not is_idempotent("braze")
