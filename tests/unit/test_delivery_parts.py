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


async def test_token_bucket_holds_the_rate():
    bucket = TokenBucket(50)  # burst of 50, then 50/s
    started = time.monotonic()
    await asyncio.gather(*(bucket.acquire() for _ in range(100)))
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 1.6


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
