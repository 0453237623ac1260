"""bind_event / restore_event: Faust's current event, which picks a table write's partition."""

from __future__ import annotations

from faust.streams import current_event

from app.agents.context import bind_event, restore_event


class Event:
    def __init__(self, partition: int):
        self.partition = partition


def test_restore_event_brings_back_the_event_current_before_the_bind():
    outer, inner = Event(1), Event(2)
    bind_event(outer)
    token = bind_event(inner)
    assert current_event() is inner
    again = bind_event(outer)
    assert current_event() is outer
    restore_event(again)
    assert current_event() is inner
    restore_event(token)
    assert current_event() is outer


def test_bind_event_holds_the_event_weakly_like_faust():
    event = Event(3)
    bind_event(event)
    assert current_event() is event
    del event
    assert current_event() is None
