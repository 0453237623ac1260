"""The sinks' per-partition write-ahead (app/delivery/intents.py) on a plain dict as the ledger."""

from app.delivery.intents import SENDING, Intents, intent_key


def test_an_entry_left_by_a_crashed_worker_lists_its_deliveries():
    ledger: dict = {}
    key = intent_key("deliveries.braze", 3)
    Intents(ledger).write(key, ["braze:a:1", "braze:a:2"])
    assert Intents(ledger).in_flight(key) == {"braze:a:1", "braze:a:2"}  # after the restart
    assert Intents(ledger).in_flight(intent_key("deliveries.braze", 2)) == frozenset()


def test_a_settled_entry_of_our_own_needs_no_checking_but_another_worker_checks_it():
    ledger: dict = {}
    key = intent_key("deliveries.insider", 0)
    ours = Intents(ledger)
    stamp = ours.write(key, ["insider:u:1"])
    assert ours.in_flight(key) == {"insider:u:1"}  # not settled yet: could be a half-way batch
    ours.settled(key, stamp)
    assert ours.in_flight(key) == frozenset()
    assert Intents(ledger).in_flight(key) == {"insider:u:1"}  # after a rebalance


def test_overwriting_keeps_the_mark_of_deliveries_still_without_an_outcome():
    ledger: dict = {}
    key = intent_key("deliveries.maac", 1)
    Intents(ledger).write(key, ["maac:p:1", "maac:p:2", "maac:p:3"])
    after_restart = Intents(ledger)
    before = after_restart.in_flight(key)
    ledger["maac:p:1"] = {"status": "delivered"}  # it had an outcome
    after_restart.write(key, ["maac:p:3", "maac:p:4"], before)  # p:3 is sent again in this batch
    assert ledger["maac:p:1"] == {"status": "delivered"}
    assert ledger["maac:p:2"]["status"] == SENDING  # not in the new batch, no outcome: kept
    assert "maac:p:3" not in ledger
    assert ledger[key]["ids"] == ["maac:p:3", "maac:p:4"]


def test_entry_keys_never_look_like_delivery_ids():
    key = intent_key("deliveries.braze", 0)
    assert key.startswith("sending|") and ":" not in key
