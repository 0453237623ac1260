"""The deferred-message schedule: stored per partition, released in due order, rebuilt from the
table after a rebalance, replays stored once."""

import orjson

from app.agents.deferred import Schedule


def delivery(n: int, due: float) -> dict:
    return {"delivery_id": f"d{n}", "destination": "maac", "not_before": due}


def test_due_items_come_out_in_order_and_only_when_due():
    table: dict = {}
    schedule = Schedule(table)
    for n, due in ((1, 30.0), (2, 10.0), (3, 20.0)):
        assert schedule.add(0, delivery(n, due))
    assert schedule.due(0, 5.0) == []
    assert [d["delivery_id"] for d in schedule.due(0, 25.0)] == ["d2", "d3"]
    assert [d["delivery_id"] for d in schedule.due(0, 99.0)] == ["d1"]


def test_a_replayed_item_is_stored_once():
    schedule = Schedule({})
    assert schedule.add(0, delivery(1, 10.0))
    assert not schedule.add(0, delivery(1, 10.0))
    assert len(schedule.due(0, 11.0)) == 1


def test_partitions_are_kept_apart_and_rebuilt_from_the_table():
    table: dict = {}
    Schedule(table).add(0, delivery(1, 10.0))
    Schedule(table).add(1, delivery(2, 10.0))
    fresh = Schedule(table)  # a new assignment: nothing in memory, everything in the table
    assert [d["delivery_id"] for d in fresh.due(1, 11.0)] == ["d2"]
    assert [d["delivery_id"] for d in fresh.due(0, 11.0)] == ["d1"]


def test_an_item_released_and_forgotten_elsewhere_is_skipped():
    table: dict = {}
    schedule = Schedule(table)
    schedule.add(0, delivery(1, 10.0))
    table.pop("d1")
    assert schedule.due(0, 11.0) == []
    assert orjson.loads(orjson.dumps(table)) == {}
