"""What a destination is: a folder with a client description, its limits and its actions.

Each destination package (`app/destinations/<name>/__init__.py`) exposes ``DESTINATION``, a
`Destination`. Each action is a small declarative unit in the spirit of Segment's
action-destinations: which fields it needs (`prepare`), how a batch becomes a request (`request`),
and how the reply becomes one `ItemResult` per delivery (`interpret`). Actions that need several
calls (eligibility check then subscribe, multicast then poll) override `perform`.

The shared machinery (HTTP, auth, rate limiting, retries, outcome recording) lives in
`app.delivery`; actions never sleep, retry or log personal data themselves.

A *delivery* is the record on `deliveries.<destination>`::

    {"delivery_id": "braze:track_attributes:<event_id>", "destination": "braze",
     "action": "track_attributes", "event_id": "...", "customer_key": "...",
     "params": {...from the routing rule...}, "envelope": {...}, "attempt": 0}
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.config import DestinationConfig


class ItemInvalid(ValueError):
    """A delivery that can never succeed as it stands (missing recipient, bad variable).

    The message is a reason for the dead-letter record; no personal data in it."""


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str  # appended to the destination's base URL (or an absolute URL for a second host)
    json: Any = None
    params: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    limit: str = "default"  # which rate-limit bucket this call draws from
    # False for a call that does not carry the delivery (MAAC topic set-up): when it goes
    # unanswered nothing was delivered, so it is retried whatever the action. GETs never carry it.
    delivers: bool = True


@dataclass(frozen=True)
class Reply:
    """A destination's answer, or the transport failure in its place (status 0)."""

    status: int
    headers: Mapping[str, str]
    body: Any  # parsed JSON where possible, else text
    error: str = ""  # "timeout", "connecterror", ... when status == 0
    # The delivering request went out and no answer came (read time-out, reset, close): the
    # destination may have acted on it. Failures before that (connect, pool, write) are not.
    unanswered: bool = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True)
class ItemResult:
    """The outcome for one delivery.

    status: "delivered" | "retry" (try again later) | "failed" (permanent) | "skipped"
    (deliberately not sent, e.g. already subscribed or too old) | "unreachable" (recipient can't
    be reached on this channel; no retry) | "auth" (credentials rejected: pause the destination).
    """

    status: str
    reason: str = ""
    http_status: int = 0
    detail: Any = None  # small, redacted summary of the response for the DLQ record
    retry_after_s: float | None = None
    unanswered: bool = False  # from Reply.unanswered


Send = Callable[[HttpRequest], Awaitable[Reply]]


def classify(reply: Reply) -> ItemResult:
    """The default, contract-wide reading of a status code for a whole request."""
    if reply.status == 0:
        return ItemResult("retry", reply.error or "transport", 0, unanswered=reply.unanswered)
    if reply.ok:
        return ItemResult("delivered", "", reply.status)
    if reply.status in (401, 403):
        return ItemResult("auth", f"http_{reply.status}", reply.status)
    if reply.status == 429 or reply.status >= 500 or reply.status == 408:
        return ItemResult("retry", f"http_{reply.status}", reply.status, retry_after_s=retry_after(reply))
    return ItemResult("failed", f"http_{reply.status}", reply.status, detail=short(reply.body))


def retry_after(reply: Reply) -> float | None:
    """Seconds to wait from Retry-After or X-RateLimit-Reset (epoch seconds or delta)."""
    import time

    headers = {k.lower(): v for k, v in reply.headers.items()}
    for name in ("retry-after", "x-ratelimit-reset"):
        raw = headers.get(name)
        if not raw:
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        if value > 1e9:  # an epoch timestamp
            value -= time.time()
        return max(0.0, min(value, 60.0))
    return None


def short(body: Any, limit: int = 500) -> Any:
    """A bounded copy of a response body for dead-letter records."""
    text = body if isinstance(body, str) else repr(body)
    return text[:limit]


def pack(items: Sequence[Any], weight, max_weight: int, max_count: int) -> list[list[Any]]:
    """Consecutive chunks with at most `max_count` items and `max_weight` total weight."""
    chunks: list[list[Any]] = []
    chunk: list[Any] = []
    used = 0
    for item in items:
        w = weight(item)
        if chunk and (len(chunk) >= max_count or used + w > max_weight):
            chunks.append(chunk)
            chunk, used = [], 0
        chunk.append(item)
        used += w
    if chunk:
        chunks.append(chunk)
    return chunks


class Action:
    """One destination action. Subclasses set the class attributes and override the methods."""

    name: str = ""
    max_batch: int = 1  # deliveries per request
    max_weight: int | None = None  # e.g. array slots or bytes per request, with `weight`
    limit: str = "default"  # rate-limit bucket
    # Safe to send again when a crash leaves its outcome unknown: setting the same attributes,
    # or the destination recognises a repeat (AIR's walletTransaction.reference). Anything that
    # messages a person or counts an event must leave this False.
    idempotent: bool = False

    def weight(self, item: Any) -> int:
        """How much of `max_weight` one prepared item uses (objects, bytes)."""
        return 1

    def batch_key(self, delivery: Mapping[str, Any]) -> str:
        """Deliveries with equal keys may share a request (e.g. same campaign id)."""
        return ""

    # Actions of one destination with the same `shares` travel in one request (Braze's three
    # /users/track arrays): their deliveries are grouped, chunked and performed together by
    # whichever of them comes first, so they must agree on `pack_requests`, `perform` and `limit`.
    shares: str = ""

    def pack_requests(self, pairs: list[tuple[Any, Any]]) -> list[list[tuple[Any, Any]]]:
        """The requests a group of (delivery, prepared item) pairs is sent in, one per chunk:
        at most `max_batch` items and `max_weight` of their `weight`."""
        return pack(pairs, lambda pair: self.weight(pair[1]), self.max_weight or 2**62,
                    max(1, self.max_batch))

    def prepare(self, delivery: Mapping[str, Any], config: DestinationConfig) -> Any:
        """Map one delivery to the item the request carries. Raise ItemInvalid for bad input."""
        raise NotImplementedError

    def request(self, items: Sequence[Any], config: DestinationConfig) -> HttpRequest:
        raise NotImplementedError

    def interpret(self, reply: Reply, items: Sequence[Any]) -> list[ItemResult]:
        """Per-item results from a reply. Default: the whole request's class for every item."""
        result = classify(reply)
        return [result] * len(items)

    async def perform(
        self, send: Send, items: Sequence[Any], config: DestinationConfig
    ) -> list[ItemResult]:
        reply = await send(self.request(items, config))
        return self.interpret(reply, items)


@dataclass(frozen=True)
class Destination:
    name: str
    actions: Mapping[str, Action]
    # requests per second for each bucket at the documented limit; scaled by config.rate_scale
    limits: Mapping[str, float]
    auth_headers: Callable[[DestinationConfig], Mapping[str, str]]
    # optional: headers that depend on the serialised request (AIR's signature)
    sign: Callable[[DestinationConfig, HttpRequest, bytes], Mapping[str, str]] | None = None
    # optional: a bucket of `limits` that every request draws from as well as its own, where the
    # destination limits all calls of a token besides some endpoints (Attentive: 150/s in all,
    # subscribe 10/s of them)
    overall: str | None = None

    def requests_per_s(self, rate_scale: float = 1.0) -> float:
        """The most requests per second its limits admit (its largest bucket)."""
        return max(self.limits.values(), default=self.limits.get("default", 10.0)) * rate_scale

    def deliveries_per_s(self, rate_scale: float = 1.0) -> float:
        """The most deliveries per second its limits let through (the fastest action: its
        bucket's requests per second times the deliveries one request carries)."""
        default = self.limits.get("default", 10.0)
        return max((self.limits.get(a.limit, default) * max(1, a.max_batch)
                    for a in self.actions.values()), default=default) * rate_scale
