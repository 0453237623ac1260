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
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import structlog

from app import metrics
from app.config import DestinationConfig, Settings
from app.delivery.backoff import full_jitter
from app.delivery.ratelimit import TokenBucket
from app.destinations.base import (
    Destination,
    HttpRequest,
    ItemInvalid,
    ItemResult,
    Reply,
    pack,
)

log = structlog.get_logger(__name__)

TERMINAL = {"delivered", "skipped", "unreachable", "failed"}
# Reason prefix of a retry caused by rejected credentials: the destination is paused, and the
# item keeps its retry budget (an expired key must not dead-letter the whole backlog).
PAUSED = "paused:"
# Transport failures after the whole request was sent (see Reply.unanswered).
SENT_UNANSWERED = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)
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


class HttpSender:
    """Auth, signing, rate limiting and transport-failure capture for one destination."""

    def __init__(self, destination: Destination, config: DestinationConfig, settings: Settings,
                 trace_ids: bool = False):
        self.destination = destination
        self.config = config
        self.trace_ids = trace_ids
        self.buckets = {
            name: TokenBucket(rate * config.rate_scale) for name, rate in destination.limits.items()
        }
        self.client = httpx.AsyncClient(
            base_url=config.base_url,
            timeout=httpx.Timeout(settings.request_timeout_s),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            headers={"User-Agent": "loyalty-relay/0.1", **destination.auth_headers(config)},
        )

    async def close(self) -> None:
        await self.client.aclose()

    def bucket(self, name: str) -> TokenBucket:
        return self.buckets.get(name) or self.buckets.setdefault(
            name, TokenBucket(self.destination.limits.get("default", 10.0) * self.config.rate_scale)
        )

    async def send(self, request: HttpRequest, relay_ids: Sequence[str] = ()) -> Reply:
        body = request.json
        if self.trace_ids and relay_ids and isinstance(body, dict):
            body = {**body, "_relay_ids": list(relay_ids)}
        content = orjson.dumps(body) if body is not None else b""
        headers = {"Content-Type": "application/json", **request.headers} if body is not None \
            else dict(request.headers)
        if self.destination.sign:
            headers.update(self.destination.sign(self.config, request, content))
        waited = await self.bucket(request.limit).acquire()
        if waited:
            metrics.RATE_LIMIT_WAIT.labels(self.destination.name).inc(waited)
        started = time.perf_counter()
        try:
            response = await self.client.request(
                request.method, request.path, content=content or None,
                params=request.params, headers=headers,
            )
        except httpx.HTTPError as exc:
            error = "timeout" if isinstance(exc, httpx.ReadTimeout) else type(exc).__name__.lower()
            unanswered = (isinstance(exc, SENT_UNANSWERED) and request.delivers
                          and request.method not in ("GET", "HEAD"))
            return self._observe(Reply(0, {}, None, error, unanswered), started)
        try:
            parsed = response.json() if response.content else None
        except ValueError:
            parsed = response.text[:2000]
        reply = Reply(response.status_code, dict(response.headers), parsed)
        if reply.status == 429:
            from app.destinations.base import retry_after

            self.bucket(request.limit).penalize(retry_after(reply) or 1.0)
        return self._observe(reply, started)

    def _observe(self, reply: Reply, started: float) -> Reply:
        metrics.REQUESTS.labels(self.destination.name, outcome_label(reply)).inc()
        metrics.REQUEST_SECONDS.labels(self.destination.name).observe(time.perf_counter() - started)
        return reply


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
                 concurrency: int = 8):
        self.destination = destination
        self.settings = settings
        self.config = config or settings.destination(destination.name)
        self.sender = HttpSender(destination, self.config, settings, trace_ids)
        self.breaker = Breaker(settings.breaker_threshold, settings.breaker_cooldown_s)
        self._slots = asyncio.Semaphore(concurrency)

    async def close(self) -> None:
        await self.sender.close()

    async def deliver(self, deliveries: Sequence[Mapping[str, Any]]) -> list[Outcome]:
        outcomes: dict[str, Outcome] = {}
        groups: dict[tuple[str, str], list[tuple[Mapping[str, Any], Any]]] = defaultdict(list)
        for delivery in deliveries:
            action = self.destination.actions.get(delivery.get("action", ""))
            if action is None:
                outcomes[delivery["delivery_id"]] = Outcome(delivery, "failed", "unknown_action")
                continue
            try:
                item = action.prepare(delivery, self.config)
            except ItemInvalid as exc:
                outcomes[delivery["delivery_id"]] = Outcome(delivery, "failed", f"invalid: {exc}")
                continue
            except (KeyError, TypeError, ValueError) as exc:
                outcomes[delivery["delivery_id"]] = Outcome(
                    delivery, "failed", f"invalid: {type(exc).__name__}")
                continue
            groups[(action.name, action.batch_key(delivery))].append((delivery, item))
        chunks = []
        for (action_name, _), pairs in groups.items():
            action = self.destination.actions[action_name]
            chunks += [(action, chunk) for chunk in pack(
                pairs, lambda pair, a=action: a.weight(pair[1]),
                action.max_weight or 2**62, max(1, action.max_batch))]
        results = await asyncio.gather(*(self._chunk(a, p) for a, p in chunks))
        for chunk_outcomes in results:
            for outcome in chunk_outcomes:
                outcomes[outcome.delivery_id] = outcome
        return [outcomes[d["delivery_id"]] for d in deliveries]

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
                elif result.status == "retry" and result.unanswered and not action.idempotent:
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

