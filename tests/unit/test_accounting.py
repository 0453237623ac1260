from app.accounting import Tracker


def test_an_origin_is_complete_only_when_every_delivery_ended_in_any_order():
    t = Tracker()
    t.expect(["air.outbound/0/1", "air.outbound/0/2"])
    t.add({"stage": "deliver", "status": "delivered", "destination": "braze", "delivery_id": "d1"})
    assert not t.done
    t.add({"stage": "ingress", "status": "normalized", "origin": "air.outbound/0/1", "event_ids": ["e1"]})
    t.add({"stage": "route", "status": "routed", "event_id": "e1",
           "deliveries": [["braze", "track_event", "d1"], ["insider", "upsert", "d2"]]})
    assert not t.complete("air.outbound/0/1")
    t.add({"stage": "deliver", "status": "retrying", "destination": "insider", "delivery_id": "d2"})
    assert not t.complete("air.outbound/0/1")
    t.add({"stage": "deliver", "status": "dead_lettered", "destination": "insider", "delivery_id": "d2"})
    assert t.complete("air.outbound/0/1")
    assert t.unaccounted() == ["air.outbound/0/2"]
    t.add({"stage": "ingress", "status": "dead_lettered", "origin": "air.outbound/0/2",
           "reason": "invalid_json"})
    assert t.done
    rows = {r["destination"]: r for r in t.summary_rows()}
    assert rows["insider"]["retried"] == 1 and rows["insider"]["dead_lettered"] == 1
    assert rows["braze"]["delivered"] == 1 and rows["braze"]["in_flight"] == 0
    assert t.ingress_dlq == 1


def test_an_event_routed_nowhere_is_complete():
    t = Tracker()
    t.expect(["identity.updates/1/0"])
    t.add({"stage": "ingress", "status": "normalized", "origin": "identity.updates/1/0", "event_ids": ["e"]})
    assert not t.done
    t.add({"stage": "route", "status": "routed", "event_id": "e", "deliveries": []})
    assert t.done


def test_batches_and_single_outcomes_are_read_alike_and_junk_carries_none():
    from app.accounting import outcomes_in

    ingress = {"stage": "ingress", "status": "normalized", "origin": "o/0/1", "event_ids": ["e"]}
    routed = {"stage": "route", "status": "routed", "event_id": "e",
              "deliveries": [["braze", "track_event", "d1"]]}
    delivered = {"stage": "deliver", "status": "delivered", "destination": "braze",
                 "delivery_id": "d1"}
    assert outcomes_in({"batch": [ingress, "junk", routed]}) == [ingress, routed]
    assert outcomes_in(delivered) == [delivered]
    for junk in (None, [], "x", {"batch": "x"}, {"batch": None}, {"other": 1}):
        assert outcomes_in(junk) == []
    t = Tracker()
    t.expect(["o/0/1"])
    t.add({"batch": [routed, ingress]})
    assert not t.done
    t.add(delivered)  # written by a worker from before batching
    assert t.done
