import asyncio
import random
import time

from app.delivery.backoff import full_jitter
from app.delivery.ratelimit import TokenBucket
from app.destinations.base import Reply, classify, retry_after


def test_full_jitter_stays_within_the_exponential_cap():
    rng = random.Random(1)
    for attempt in range(1, 10):
        delays = [full_jitter(attempt, 0.1, 2.0, rng) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= min(2.0, 0.1 * 2 ** attempt)


async def answered_at_once(bucket: TokenBucket) -> float:
    waited = await bucket.acquire()
    bucket.release()
    return waited


async def test_token_bucket_holds_the_rate():
    bucket = TokenBucket(50)  # 50 per sliding second
    started = time.monotonic()
    await asyncio.gather(*(answered_at_once(bucket) for _ in range(100)))
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 1.6


async def test_no_one_second_window_exceeds_the_limit():
    bucket = TokenBucket(20)
    stamps = []

    async def one():
        await answered_at_once(bucket)
        stamps.append(time.monotonic())
    await asyncio.gather(*(one() for _ in range(70)))
    stamps.sort()
    busiest = max(sum(1 for t in stamps if s <= t < s + 1.0) for s in stamps)
    assert busiest <= 20
    assert stamps[-1] - stamps[0] >= 3.0  # 70 requests at 20 per window need 4 windows


async def test_arrivals_anywhere_between_departure_and_answer_never_exceed_the_limit():
    """What a destination counts: a request arrives after it left and before its answer came
    back, and a busy client's event loop can bunch arrivals that left on time."""
    rng = random.Random(7)
    bucket = TokenBucket(10)
    arrivals = []

    async def one():
        await bucket.acquire()
        try:
            await asyncio.sleep(rng.uniform(0.0, 0.15))  # in the client's loop, on the wire
            arrivals.append(time.monotonic())
            await asyncio.sleep(rng.uniform(0.0, 0.05))  # the answer's way back
        finally:
            bucket.release()
    await asyncio.gather(*(one() for _ in range(40)))
    arrivals.sort()
    busiest = max(sum(1 for t in arrivals if s <= t < s + 1.0) for s in arrivals)
    assert busiest <= 10
    assert bucket.in_flight == 0


async def test_a_window_held_in_flight_waits_for_an_answer():
    bucket = TokenBucket(2)
    await bucket.acquire()
    await bucket.acquire()
    third = asyncio.ensure_future(bucket.acquire())
    await asyncio.sleep(0.1)
    assert not third.done()  # both slots in flight: nothing can be known to have arrived yet
    bucket.release()
    assert await asyncio.wait_for(third, 2.0) >= 0.9  # a slot frees a window after the answer


async def test_penalty_blocks_the_next_request():
    bucket = TokenBucket(100)
    bucket.penalize(0.3)
    assert await bucket.acquire() >= 0.25


def test_classify_reads_the_contract_status_classes():
    assert classify(Reply(200, {}, {})).status == "delivered"
    assert classify(Reply(429, {"Retry-After": "3"}, {})).retry_after_s == 3.0
    assert classify(Reply(503, {}, None)).status == "retry"
    assert classify(Reply(0, {}, None, "timeout")).status == "retry"
    assert classify(Reply(403, {}, None)).status == "auth"
    assert classify(Reply(404, {}, {"detail": "x"})).status == "failed"


def test_retry_after_reads_epoch_reset_headers():
    wait = retry_after(Reply(429, {"X-RateLimit-Reset": str(int(time.time()) + 5)}, None))
    assert 3.5 <= wait <= 5.0


def test_a_sink_settles_at_most_about_a_second_of_what_its_destination_takes():
    from app.agents.sinks import MIN_SETTLE, settle_size
    from app.destinations.registry import DESTINATIONS

    attentive = DESTINATIONS["attentive"]  # one person per call, 150 calls/s
    assert attentive.deliveries_per_s() == 150.0
    assert settle_size(attentive, 1.0, 1000) == 150
    assert settle_size(attentive, 20.0, 1000) == 1000  # SINK_BATCH_MAX caps it
    assert settle_size(DESTINATIONS["insider"], 1.0, 1000) == 1000  # 1,000 users per call
    assert settle_size(DESTINATIONS["air"], 0.01, 1000) == MIN_SETTLE


def test_a_sink_settles_what_ends_within_about_a_second_whatever_the_limits_say():
    from app.agents.sinks import MIN_SETTLE, SETTLE_WINDOW_S, Pace

    pace = Pace(1000)
    assert pace.size() == 1000  # the documented limits, until a settle says otherwise
    pace.observe(1000, 6.0 * SETTLE_WINDOW_S)  # one push per call: six seconds in flight
    assert pace.size() == 166
    pace.observe(166, 0.5 * SETTLE_WINDOW_S)  # quicker than the window: it may double
    assert pace.size() == 332
    pace.observe(3, 0.01)  # a light-load settle: its round trip says nothing of a full one
    assert pace.size() == 332
    pace.observe(332, 40.0)  # a destination timing out
    assert pace.size() == MIN_SETTLE
    for _ in range(10):
        pace.observe(pace.size(), 0.1)
    assert pace.size() == 1000  # back up to the ceiling, never past it
    small = Pace(4)
    small.observe(4, 10.0)
    assert small.size() == 4  # MIN_SETTLE never lifts a sink above its own ceiling


def test_only_destinations_whose_requests_carry_several_deliveries_wait_to_gather_them():
    from app.agents.sinks import gathers
    from app.destinations.registry import DESTINATIONS

    assert {name for name, dest in DESTINATIONS.items() if gathers(dest)} == {
        "braze", "insider", "maac"}


async def test_a_request_draws_from_its_own_bucket_and_the_destinations_overall_one():
    from app.config import DestinationConfig, Settings
    from app.delivery.core import HttpSender
    from app.destinations.attentive import DESTINATION as ATTENTIVE
    from app.destinations.base import HttpRequest

    config = DestinationConfig(base_url="http://127.0.0.1:1", token="t")
    sender = HttpSender(ATTENTIVE, config, Settings(request_timeout_s=1.0))
    try:
        await sender.send(HttpRequest("POST", "/subscriptions", json={}, limit="subscribe"))
        await sender.send(HttpRequest("POST", "/events/custom", json={}, limit="default"))
    finally:
        await sender.close()
    # Attentive counts every call against 150/s, subscribes against their 10/s as well
    assert len(sender.bucket("subscribe")._answered) == 1
    assert len(sender.bucket("default")._answered) == 2
    # refused connections are answers too: nothing is left holding a slot
    assert sender.bucket("subscribe").in_flight == sender.bucket("default").in_flight == 0


def test_requests_in_flight_follow_what_a_destination_admits():
    from app.config import DestinationConfig
    from app.delivery.core import MAX_CONCURRENCY, MIN_CONCURRENCY, concurrency_for
    from app.destinations.attentive import DESTINATION as ATTENTIVE
    from app.destinations.insider import DESTINATION as INSIDER

    assert concurrency_for(ATTENTIVE, DestinationConfig()) == 15  # 150/s x 100 ms
    assert concurrency_for(INSIDER, DestinationConfig()) == 42  # 25,000/min x 100 ms
    assert concurrency_for(ATTENTIVE, DestinationConfig(rate_scale=0.01)) == MIN_CONCURRENCY
    assert concurrency_for(ATTENTIVE, DestinationConfig(rate_scale=20)) == MAX_CONCURRENCY
    assert concurrency_for(ATTENTIVE, DestinationConfig(concurrency=3)) == 3  # <DEST>_CONCURRENCY


def test_a_worker_uses_its_share_of_the_delivery_partitions_of_the_limits():
    from faust.types import TP

    from app.agents.sinks import limit_share

    lanes = {"deliveries.attentive": 4, "deliveries.retry.attentive": 4}
    every = [TP(topic, p) for topic in lanes for p in range(4)]
    assert limit_share(every, lanes) == 1.0  # alone
    half = [TP("deliveries.attentive", 0), TP("deliveries.attentive", 1),
            TP("deliveries.retry.attentive", 2), TP("deliveries.retry.attentive", 3),
            TP("deliveries.braze", 0)]
    assert limit_share(half, lanes) == 0.5
    assert limit_share([TP("deliveries.braze", 0)], lanes) == 1 / 8  # none: one partition's worth


async def test_a_share_of_the_limits_rescales_every_bucket():
    from app.config import DestinationConfig, Settings
    from app.delivery.core import HttpSender
    from app.destinations.attentive import DESTINATION as ATTENTIVE

    sender = HttpSender(ATTENTIVE, DestinationConfig(rate_scale=2.0), Settings())
    assert sender.bucket("default").limit == 300 and sender.bucket("subscribe").limit == 20
    sender.set_share(0.5)
    assert sender.bucket("default").limit == 150 and sender.bucket("subscribe").limit == 10
    assert sender.bucket("other").limit == 150  # made later: the share applies too
    sender.set_share(1.0)
    assert sender.bucket("default").limit == 300
