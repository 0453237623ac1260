"""A worker killed while its requests are in flight: after the restart those deliveries go to
an operator (`ambiguous_after_crash` in deliveries.dlq) and are never sent a second time, while
the rest of the replayed batch is skipped as done or delivered once (app/delivery/intents.py).
The retry lane's case is in test_crash_in_lane.py."""

import asyncio
import time
import uuid

import httpx
import orjson

from app.broker import free_port
from app.localstack import produce, read_topic
from tests.integration.conftest import wait_until
from tests.integration.test_delivery_guarantees import planned_ids
from tests.integration.test_vertical_slice import tier_move


def metric(worker, series: str) -> float:
    """One sample of the worker's /metrics (0 while it is not there yet)."""
    try:
        text = httpx.get(f"{worker.url}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def braze_batches_sent(worker) -> float:
    """Braze batches past their write-ahead (the sink observes the size just before sending)."""
    return metric(worker, 'relay_delivery_batch_size_count{destination="braze"}')


def dead_letters(broker) -> list[dict]:
    async def collect():
        return [r async for _t, r in read_topic(broker.bootstrap, ["deliveries.dlq"],
                                                idle_timeout_s=2.0)]
    return asyncio.run(collect())


def ambiguous(broker) -> set[str]:
    return {r["delivery"]["delivery_id"] for r in dead_letters(broker)
            if r.get("reason") == "ambiguous_after_crash"}


def tier_move_records() -> list[tuple[str, bytes, bytes]]:
    customer = f"C-{uuid.uuid4().hex[:10]}"
    return [("air.outbound", customer.encode(),
             orjson.dumps(tier_move(customer, str(uuid.uuid4()))))]


def kill_and_restart(first, start_worker, broker, sandbox, braze_ids: set[str], what: str,
                     **start) -> tuple[dict[str, int], set[str]]:
    """Kill `first` with a Braze request in flight, start a worker on the same state, and wait
    until some Braze delivery is dead-lettered as ambiguous (`what`) and every one has ended.
    Returns the sandbox's accepted ids and the ambiguous ones."""
    first.kill()
    early = braze_ids & set(sandbox.ids())
    assert not early, (f"{len(early)} Braze deliveries were accepted before the kill: the request "
                       "was not in flight (the machine was slower than the sandbox's latency)")
    sandbox.clear_faults()
    second = start_worker(**start)
    wait_until(lambda: braze_ids & ambiguous(broker), 60, what=what)
    wait_until(lambda: all(i in sandbox.ids() or i in ambiguous(broker) for i in braze_ids), 60,
               what="every Braze delivery ended")
    time.sleep(1.0)  # a second send would show up now
    accepted, ended = sandbox.ids(), ambiguous(broker)
    second.stop()
    return accepted, ended


def test_requests_in_flight_at_a_crash_are_never_sent_twice(broker, sandbox, start_worker, tmp_path):
    sandbox.reset()
    data_dir, port = str(tmp_path / "state"), free_port()
    env = {"APP_ID": "crash-in-flight", "SINK_BATCH_WINDOW_S": "0.2"}
    first = start_worker(port=port, data_dir=data_dir, **env)
    # Long enough that the request is surely still waiting at the kill on a loaded machine;
    # the sandbox still acts on it afterwards, as a real server would.
    sandbox.faults(destination="braze", latency_ms=8000)
    records = tier_move_records()
    braze_ids = planned_ids(records, {"braze"})
    insider_ids = planned_ids(records, {"insider"})
    assert braze_ids and insider_ids
    asyncio.run(produce(broker.bootstrap, records))
    wait_until(lambda: braze_batches_sent(first) > 0, 60, what="the Braze batch in flight")
    time.sleep(0.5)  # the request is now waiting in the sandbox's latency
    # The batch in flight at the kill is dead-lettered; a Braze delivery that fell into the
    # next batch (not yet sent) is sent once after the restart.
    accepted, ended = kill_and_restart(
        first, start_worker, broker, sandbox, braze_ids,
        "the Braze batch in flight dead-lettered as ambiguous", port=port, data_dir=data_dir, **env)
    assert all(accepted.get(i, 0) <= 1 for i in braze_ids | insider_ids), accepted
    # Insider had no latency: sent before the crash, and skipped or dead-lettered after it.
    assert all(accepted.get(i, 0) == 1 or i in ended for i in insider_ids), accepted

