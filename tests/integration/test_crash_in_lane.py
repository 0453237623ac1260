"""A worker killed while its retry lane's request is in flight: the item already had a ledger
status (in the retry lane) when it was sent again, and the crash must still leave it marked as
in flight, so it goes to an operator (`ambiguous_after_crash`) instead of being sent twice.

Its own module, so its own broker: a worker of another group would consume the same topics from
the beginning and fill this lane with that group's items."""

import asyncio
import time

from app.broker import free_port
from app.localstack import produce
from tests.integration.conftest import wait_until
from tests.integration.test_crash_in_flight import kill_and_restart, metric, tier_move_records
from tests.integration.test_delivery_guarantees import planned_ids


def test_a_retry_lane_request_in_flight_at_a_crash_is_never_sent_twice(
        broker, sandbox, start_worker, tmp_path):
    sandbox.reset()
    data_dir, port = str(tmp_path / "state"), free_port()
    env = {"APP_ID": "crash-in-lane", "SINK_BATCH_WINDOW_S": "0.2", "RETRY_ATTEMPTS": "1",
           "RETRY_BASE_S": "0.05", "RETRY_MAX_S": "0.3", "TOPIC_RETRY_MAX": "100",
           "BREAKER_THRESHOLD": "100000"}
    first = start_worker(port=port, data_dir=data_dir, **env)
    # Every Braze call takes 2 s and fails: the lane sends its head again at most 0.3 s after
    # each failure, so 0.8 s after a failure is counted its next request is in flight.
    sandbox.faults(destination="braze", error_rate=1.0, statuses=[503], latency_ms=2000)
    records = tier_move_records()
    braze_ids = planned_ids(records, {"braze"})
    asyncio.run(produce(broker.bootstrap, records))
    lane_retries = 'relay_delivery_retries_total{destination="braze",stage="topic"}'
    wait_until(lambda: metric(first, lane_retries) >= 3, 60, 0.05,
               what="the retry lane retrying its head item")
    time.sleep(0.8)
    accepted, _ = kill_and_restart(
        first, start_worker, broker, sandbox, braze_ids,
        "the lane's item in flight dead-lettered as ambiguous", port=port, data_dir=data_dir, **env)
    assert all(accepted.get(i, 0) <= 1 for i in braze_ids), accepted
