"""The delivery core every destination plugs into.

`Deliverer.deliver(deliveries)` turns a batch of delivery records into one outcome each:
prepare (validation) -> group by action and batch key -> chunk by the action's batch size ->
perform through a rate-limited, authenticated HTTP sender -> bounded in-process retries with
full-jitter back-off for the items that asked for it. What still needs retrying after that comes
back as status "retry" and the sink puts it on the destination's retry topic, so the main sink
never blocks behind one failing item.

Outcome statuses: delivered | skipped | unreachable | failed (permanent, dead-letter) | retry.
A request left without an answer is retried only for idempotent actions; for the others it is
failed as `ambiguous_no_response` (see NO_ANSWER), since the destination may have acted on it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import structlog

from app import metrics
from app.batches import in_turns
from app.config import DestinationConfig, Settings
from app.delivery.backoff import full_jitter
from app.delivery.ratelimit import TokenBucket
from app.destinations.base import (
    Destination,
    HttpRequest,
    ItemInvalid,
    ItemResult,
    Reply,
)

log = structlog.get_logger(__name__)

TERMINAL = {"delivered", "skipped", "unreachable", "failed"}
# Reason prefix of a retry caused by rejected credentials: the destination is paused, and the
# item keeps its retry budget (an expired key must not dead-letter the whole backlog).
PAUSED = "paused:"
# Transport failures, most specific first (aiohttp's connect errors subclass its OS error): the
# label (Reply.error; a reason in outcomes and DLQ records) and whether the request may have
# left and been acted on (Reply.unanswered). aiohttp does not tell a reset while writing from
# one while reading, so both count as possibly acted on: the cautious reading, since such a
# delivery is never sent twice, only retried when its action is idempotent.
TRANSPORT_FAILURES = (
    (aiohttp.ConnectionTimeoutError, "connecttimeout", False),  # no connection (or pool slot)
    (aiohttp.ClientConnectorError, "connecterror", False),  # never connected
    (aiohttp.SocketTimeoutError, "timeout", True),  # sent, no answer in time
    (aiohttp.ServerDisconnectedError, "disconnected", True),
    (aiohttp.ClientPayloadError, "readerror", True),
    (aiohttp.ClientOSError, "readerror", True),
    (aiohttp.ClientResponseError, "protocolerror", True),  # an answer that is not HTTP
    (asyncio.TimeoutError, "timeout", True),
)
# Dead-letter reasons of deliveries the destination may have acted on, for actions that must not
# be sent twice: a replay skips them and an operator decides (`relay dlq redrive`).
AFTER_CRASH = "ambiguous_after_crash"  # still marked in flight after a restart (sinks, intents)
NO_ANSWER = "ambiguous_no_response"  # the request went out and no answer came
AMBIGUOUS = (AFTER_CRASH, NO_ANSWER)


@dataclass
class Outcome:
    delivery: Mapping[str, Any]
    status: str
    reason: str = ""
    http_status: int = 0
    attempts: int = 0
    detail: Any = None
    retry_after_s: float | None = None

    @property
    def delivery_id(self) -> str:
        return self.delivery["delivery_id"]


@dataclass
class Breaker:
    """Opens after `threshold` consecutive failed requests; half-opens after `cooldown_s`."""

    threshold: int = 20
    cooldown_s: float = 30.0
    failures: int = 0
    opened_at: float = 0.0
    paused_until: float = 0.0  # set on 401/403: the destination is paused, not failing
    reason: str = ""

    def allow(self) -> bool:
        now = time.monotonic()
        if now < self.paused_until:
            return False
        return not self.opened_at or now - self.opened_at >= self.cooldown_s

    def record(self, ok: bool) -> None:
        if ok:
            self.failures, self.opened_at = 0, 0.0
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = time.monotonic()

    def wait_s(self) -> float:
        """Seconds until the breaker lets a request through (0 when it does now)."""
        now = time.monotonic()
        waits = [self.paused_until - now]
        if self.opened_at:
            waits.append(self.opened_at + self.cooldown_s - now)
        return max(0.0, *waits)

    @property
    def state(self) -> str:
        if time.monotonic() < self.paused_until:
            return "paused"
        if self.opened_at and time.monotonic() - self.opened_at < self.cooldown_s:
            return "open"
        return "half_open" if self.opened_at else "closed"


# Requests in flight per destination: what its limits admit in REQUEST_LATENCY_S (Little's
# law: to reach a rate, a client keeps rate x latency requests in flight), within these bounds.
# At a fixed 8, a destination that takes one delivery per call (Attentive, MAAC push) topped
# out at 8 / latency: about 700 calls/s against the sandbox (a third of its limit at the
# bench's rate scale), 40-80 against a real API answering in 100-200 ms (150 documented).
REQUEST_LATENCY_S = 0.1
MIN_CONCURRENCY, MAX_CONCURRENCY = 8, 64


def concurrency_for(destination: Destination, config: DestinationConfig) -> int:
    """<DEST>_CONCURRENCY, else the requests its limits admit in REQUEST_LATENCY_S."""
    if config.concurrency is not None:
        return config.concurrency
    wanted = math.ceil(destination.requests_per_s(config.rate_scale) * REQUEST_LATENCY_S)
    return max(MIN_CONCURRENCY, min(MAX_CONCURRENCY, wanted))


class HttpSender:
    """Auth, signing, rate limiting and transport-failure capture for one destination.

    aiohttp rather than httpx: measured on this machine against the sandbox, httpx cost 840-2,660
    us of client CPU per request (its connection pool and anyio layers), aiohttp 110-290 us, and
    a worker sends about one request for every two events (BENCHMARKS.md)."""

    def __init__(self, destination: Destination, config: DestinationConfig, settings: Settings,
                 trace_ids: bool = False, connections: int = MAX_CONCURRENCY):
        self.destination = destination
        self.config = config
        self.trace_ids = trace_ids
        self.connections = connections
        self.share = 1.0  # of the destination's limits this worker may use (`set_share`)
        self.buckets = {name: TokenBucket(self._rate(name)) for name in destination.limits}
        self.base_url = (config.base_url or "").rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=None, connect=settings.request_timeout_s,
                                             sock_read=settings.request_timeout_s)
        self.headers = {"User-Agent": "loyalty-relay/0.1", **destination.auth_headers(config)}
        self._session: aiohttp.ClientSession | None = None
        # The labelled metric children, looked up once rather than on every request.
        self._outcomes: dict[str, Any] = {}
        self._seconds = metrics.REQUEST_SECONDS.labels(destination.name)

    def session(self) -> aiohttp.ClientSession:
        """The connection pool, made on first use: aiohttp binds it to the running loop."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections, keepalive_timeout=30),
                timeout=self.timeout, headers=self.headers, raise_for_status=False,
                auto_decompress=True)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def bucket(self, name: str) -> TokenBucket:
        return self.buckets.get(name) or self.buckets.setdefault(name, TokenBucket(self._rate(name)))

    def _rate(self, name: str) -> float:
        limits = self.destination.limits
        return limits.get(name, limits.get("default", 10.0)) * self.config.rate_scale * self.share

    def set_share(self, share: float) -> None:
        """Use `share` (0-1] of the destination's limits: a destination counts the calls of
        every worker together, and each worker holds its share of the destination's traffic."""
        self.share = min(1.0, max(share, 1e-6))
        for name, bucket in self.buckets.items():
            bucket.rescale(self._rate(name))

    def url(self, request: HttpRequest) -> str:
        """The destination's base URL + the request path, or the path when it is a URL itself
        (a second host, e.g. SessionM's offers service)."""
        return request.path if "://" in request.path else self.base_url + request.path

    async def send(self, request: HttpRequest, relay_ids: Sequence[str] = ()) -> Reply:
        content, headers = self._encode(request, relay_ids)
        overall = self.destination.overall
        buckets = [self.bucket(request.limit)]
        if overall and request.limit != overall:
            buckets.append(self.bucket(overall))
        taken: list[TokenBucket] = []
        try:
            waited = 0.0
            for bucket in buckets:
                waited += await bucket.acquire()
                taken.append(bucket)
            if waited:
                metrics.RATE_LIMIT_WAIT.labels(self.destination.name).inc(waited)
            started = time.perf_counter()
            try:
                async with self.session().request(
                        request.method, self.url(request), data=content or None,
                        params=query(request.params), headers=headers) as response:
                    raw = await response.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                label, maybe_sent = transport_failure(exc)
                unanswered = (maybe_sent and request.delivers
                              and request.method not in ("GET", "HEAD"))
                return self._observe(Reply(0, {}, None, label, unanswered), started)
        finally:
            for bucket in taken:  # answered, failed or cancelled: it counts from now
                bucket.release()
        # The answer's own headers (read-only, case-insensitive), not a copy: only Retry-After
        # and X-RateLimit-Reset are ever read from them.
        reply = Reply(response.status, response.headers, parse_body(raw))
        if reply.status == 429:
            from app.destinations.base import retry_after

            self.bucket(request.limit).penalize(retry_after(reply) or 1.0)
        return self._observe(reply, started)

    def _encode(self, request: HttpRequest, relay_ids: Sequence[str]
                ) -> tuple[bytes, Mapping[str, str]]:
        """(body as sent, b"" for none; the request's own headers). The session adds
        User-Agent and auth; the headers are handed to aiohttp, which copies them, so the
        common case shares one dict instead of building one per request."""
        body = request.json
        if self.trace_ids and relay_ids and isinstance(body, dict):
            body = {**body, "_relay_ids": list(relay_ids)}
        if body is None:
            content, headers = b"", request.headers
        else:
            content = orjson.dumps(body)
            headers = {**JSON_HEADERS, **request.headers} if request.headers else JSON_HEADERS
        if self.destination.sign:
            headers = {**headers, **self.destination.sign(self.config, request, content)}
        return content, headers

    def _observe(self, reply: Reply, started: float) -> Reply:
        label = outcome_label(reply)
        requests = self._outcomes.get(label)
        if requests is None:
            requests = self._outcomes[label] = metrics.REQUESTS.labels(self.destination.name, label)
        requests.inc()
        self._seconds.observe(time.perf_counter() - started)
        return reply


JSON_HEADERS: Mapping[str, str] = {"Content-Type": "application/json"}


def query(params: Mapping[str, Any] | None) -> list[tuple[str, str]] | None:
    """Query parameters as text, the way they are signed (`None` values left out)."""
    if not params:
        return None
    return [(k, ("true" if v else "false") if isinstance(v, bool) else str(v))
            for k, v in params.items() if v is not None]


def parse_body(raw: bytes) -> Any:
    """JSON where the body is JSON, else its text (bounded), None when empty."""
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:2000].decode("utf-8", "replace")


def transport_failure(exc: BaseException) -> tuple[str, bool]:
    """(label, whether the request may have been acted on) for a transport failure."""
    for kind, label, maybe_sent in TRANSPORT_FAILURES:
        if isinstance(exc, kind):
            return label, maybe_sent
    return type(exc).__name__.lower(), False


def outcome_label(reply: Reply) -> str:
    if reply.status == 0:
        return "timeout" if "timeout" in reply.error else "connection"
    if reply.status == 429:
        return "429"
    return f"{reply.status // 100}xx"


class Deliverer:
    """Delivers batches for one destination; one instance per worker per destination."""

    def __init__(self, destination: Destination, settings: Settings,
                 config: DestinationConfig | None = None, trace_ids: bool = False,
                 concurrency: int | None = None):
        self.destination = destination
        self.settings = settings
        self.config = config or settings.destination(destination.name)
        self.concurrency = concurrency or concurrency_for(destination, self.config)
        self.sender = HttpSender(destination, self.config, settings, trace_ids,
                                 connections=max(MAX_CONCURRENCY, self.concurrency))
        self.breaker = Breaker(settings.breaker_threshold, settings.breaker_cooldown_s)
        self._slots = asyncio.Semaphore(self.concurrency)

    async def close(self) -> None:
        await self.sender.close()

    async def deliver(self, deliveries: Sequence[Mapping[str, Any]]) -> list[Outcome]:
        """One outcome per delivery, in the order given."""
        outcomes: dict[str, Outcome] = {}
        async for chunk in self.deliver_chunks(deliveries):
            for outcome in chunk:
                outcomes[outcome.delivery_id] = outcome
        return [outcomes[d["delivery_id"]] for d in deliveries]

    async def deliver_chunks(self, deliveries: Sequence[Mapping[str, Any]]
                             ) -> AsyncIterator[list[Outcome]]:
        """The outcomes of `deliveries` as each request's chunk ends (those invalid first), so
        a sink records an answered chunk while slower ones are still out: a worker killed then
        leaves only the unanswered in flight (`ambiguous_after_crash`), not the whole batch."""
        invalid, chunks = await self._plan(deliveries)
        if invalid:
            yield invalid
        tasks = [asyncio.ensure_future(self._chunk(a, p)) for a, p in chunks]
        try:
            for done in asyncio.as_completed(tasks):
                yield await done
        finally:
            for task in tasks:
                task.cancel()

    async def _plan(self, deliveries: Sequence[Mapping[str, Any]]) -> tuple[list[Outcome], list]:
        """(outcomes of the deliveries that cannot be sent, [(action, pairs) per request])."""
        invalid: list[Outcome] = []
        groups: dict[tuple[str, str], list[tuple[Mapping[str, Any], Any]]] = defaultdict(list)
        async for delivery in in_turns(deliveries):
            action = self.destination.actions.get(delivery.get("action", ""))
            if action is None:
                invalid.append(Outcome(delivery, "failed", "unknown_action"))
                continue
            try:
                item = action.prepare(delivery, self.config)
            except ItemInvalid as exc:
                invalid.append(Outcome(delivery, "failed", f"invalid: {exc}"))
                continue
            except (KeyError, TypeError, ValueError) as exc:
                invalid.append(Outcome(delivery, "failed", f"invalid: {type(exc).__name__}"))
                continue
            groups[(action.shares or action.name, action.batch_key(delivery))].append(
                (delivery, item))
        chunks = []
        for pairs in groups.values():
            action = self.destination.actions[pairs[0][0]["action"]]
            chunks += [(action, chunk) for chunk in action.pack_requests(pairs)]
        return invalid, chunks

    async def _chunk(self, action, pairs) -> list[Outcome]:
        async with self._slots:
            return await self._attempts(action, pairs)

    async def _attempts(self, action, pairs) -> list[Outcome]:
        done: list[Outcome] = []
        pending = list(pairs)
        for attempt in range(1, self.settings.retry_attempts + 1):
            if not self.breaker.allow():
                reason = f"{PAUSED}circuit_{self.breaker.state}"
                return done + [Outcome(d, "retry", reason, attempts=attempt - 1) for d, _ in pending]
            ids = [d["delivery_id"] for d, _ in pending]
            results = await action.perform(
                lambda req, ids=ids: self.sender.send(req, ids),
                [item for _, item in pending], self.config)
            if len(results) != len(pending):
                raise RuntimeError(f"{self.destination.name}.{action.name} returned "
                                   f"{len(results)} results for {len(pending)} items")
            retry, wait, unanswered = [], 0.0, 0
            for (delivery, item), result in zip(pending, results):
                if result.status == "auth":
                    self._pause(result)
                    retry.append((delivery, item, result))
                elif result.status == "retry" and result.unanswered and not self._idempotent(
                        delivery):
                    unanswered += 1
                    done.append(Outcome(delivery, "failed", NO_ANSWER, result.http_status,
                                        attempts=attempt, detail=result.reason))
                elif result.status == "retry":
                    retry.append((delivery, item, result))
                    wait = max(wait, result.retry_after_s or 0.0)
                else:
                    done.append(_outcome(delivery, result, attempt))
            self.breaker.record(len(retry) + unanswered < len(pending) or not pending)
            if not retry:
                return done
            pending = [(d, i) for d, i, _ in retry]
            if attempt == self.settings.retry_attempts or any(r.status == "auth" for *_, r in retry):
                return done + [_outcome(d, r, attempt, "retry", paused=r.status == "auth")
                               for d, _, r in retry]
            metrics.RETRIES.labels(self.destination.name, "in_process").inc(len(retry))
            await asyncio.sleep(max(wait, full_jitter(
                attempt, self.settings.retry_base_s, self.settings.retry_max_s)))
        return done

    def _idempotent(self, delivery: Mapping[str, Any]) -> bool:
        """Per delivery: a chunk may hold several actions (`Action.shares`)."""
        return self.destination.actions[delivery["action"]].idempotent

    def _pause(self, result: ItemResult) -> None:
        if time.monotonic() >= self.breaker.paused_until:
            log.error("destination.paused", destination=self.destination.name,
                      http_status=result.http_status, reason="credentials rejected")
            metrics.AUTH_FAILURES.labels(self.destination.name).inc()
        self.breaker.paused_until = time.monotonic() + self.breaker.cooldown_s


def _outcome(delivery, result: ItemResult, attempts: int, status: str | None = None,
             paused: bool = False) -> Outcome:
    reason = f"{PAUSED}{result.reason}" if paused else result.reason
    return Outcome(delivery, status or result.status, reason, result.http_status,
                   attempts, result.detail, result.retry_after_s)

