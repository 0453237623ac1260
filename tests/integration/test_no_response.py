"""A destination that acts on a request but answers after the relay stopped waiting: the Braze
event (counted twice if sent twice) goes to an operator as `ambiguous_no_response`, a replay and
a plain `relay dlq redrive` skip it, and a redrive naming the reason sends it again; the Braze
attributes (safe to set twice) are sent again until answered.

Its own module, so its own broker: the replay reads the whole ingress topic."""

import asyncio
import time

from app.broker import free_port
from app.localstack import produce
from tests.integration.conftest import wait_until
from tests.integration.test_crash_in_flight import dead_letters, tier_move_records
from tests.integration.test_delivery_guarantees import outcomes, planned_ids, relay_cli

NO_ANSWER = "ambiguous_no_response"


def unanswered(broker) -> set[str]:
    return {r["delivery"]["delivery_id"] for r in dead_letters(broker) if r.get("reason") == NO_ANSWER}


def test_an_unanswered_request_is_sent_again_only_when_that_is_safe(broker, sandbox, start_worker):
    sandbox.reset()
    worker = start_worker(port=free_port(), APP_ID="no-response", REQUEST_TIMEOUT_S="1",
                          RETRY_BASE_S="0.05", RETRY_MAX_S="0.3", SINK_BATCH_WINDOW_S="0.05",
                          BREAKER_THRESHOLD="100000")
    sandbox.faults(destination="braze", latency_ms=1500)
    records = tier_move_records()
    ids = planned_ids(records, {"braze"})
    [event_id] = [i for i in ids if ":track_event:" in i]
    [attributes_id] = [i for i in ids if ":track_attributes:" in i]
    asyncio.run(produce(broker.bootstrap, records))

    wait_until(lambda: event_id in unanswered(broker), 60, what="the event dead-lettered")
    sandbox.clear_faults()
    wait_until(lambda: any(o.get("delivery_id") == attributes_id and o.get("status") == "delivered"
                           for o in outcomes(broker, 1.0)), 60, what="the attributes delivered")
    assert sandbox.ids()[event_id] == 1  # Braze did count it, once
    assert sandbox.ids()[attributes_id] >= 2 and attributes_id not in unanswered(broker)

    replay = relay_cli(broker, "replay", "--topic", "air.outbound")
    assert replay.returncode == 0, replay.stderr
    wait_until(lambda: any(o.get("delivery_id") == event_id and o.get("status") == "duplicate_skipped"
                           for o in outcomes(broker, 1.0)), 60, what="the replayed event skipped")
    time.sleep(1.0)
    assert sandbox.ids()[event_id] == 1

    everything = relay_cli(broker, "dlq", "redrive", "--destination", "braze")
    out = everything.stdout.decode()
    assert everything.returncode == 0 and "held back: 1" in out and "re-driven: 0" in out, out
    redriven = relay_cli(broker, "dlq", "redrive", "--destination", "braze", "--reason", NO_ANSWER)
    assert redriven.returncode == 0 and "re-driven: 1" in redriven.stdout.decode(), redriven.stdout
    wait_until(lambda: sandbox.ids()[event_id] == 2, 60, what="the operator's re-drive sent")
    worker.stop()
