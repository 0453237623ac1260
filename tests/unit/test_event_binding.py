"""bind_event / event_bound: Faust's current event, which picks a table write's partition."""

from __future__ import annotations

import pytest
from faust.streams import current_event

from app.agents.context import bind_event, event_bound


class Event:
    def __init__(self, partition: int):
        self.partition = partition


def test_event_bound_restores_the_event_before_it_even_when_the_block_raises():
    outer, inner = Event(1), Event(2)
    bind_event(outer)
    with event_bound(inner):
        assert current_event() is inner
        with event_bound(outer):
            assert current_event() is outer
        assert current_event() is inner
    assert current_event() is outer
    with pytest.raises(KeyError), event_bound(inner):
        raise KeyError("bug")
    assert current_event() is outer


def test_bind_event_holds_the_event_weakly_like_faust():
    event = Event(3)
    bind_event(event)
    assert current_event() is event
    del event
    assert current_event() is None
