"""The shared core of the emulators: what an emulated endpoint is, and small validators.

Why a common shape: every emulator needs the same pipeline (count the arrival, inject faults,
check auth, enforce rate limits, parse JSON, strip `_relay_ids`, validate, answer, record). The
pipeline lives once in `app.sandbox.server`; an emulator only declares its endpoints, how it checks
auth and how its errors look, so each emulator module stays about its vendor's rules.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import web

from app.sandbox.limits import LimitState

if TYPE_CHECKING:
    from app.sandbox.server import Hub

# Fixed sandbox credentials: fake values, safe to print, the same in every run.
KEYS: dict[str, str] = {
    "MAAC_TOKEN": "sandbox-maac-token",
    "BRAZE_API_KEY": "sandbox-braze-key",
    "ATTENTIVE_API_KEY": "sandbox-attentive-key",
    "ATTENTIVE_SIGNUP_SOURCE_ID": "100001",
    "SESSIONM_API_KEY": "sandbox-sessionm-key",
    "SESSIONM_API_SECRET": "sandbox-sessionm-secret",
    # The "Basic auth string provided by SessionM": the part after "Basic " in the header.
    "SESSIONM_OFFERS_AUTH": base64.b64encode(b"sandbox-offers:sandbox-offers-secret").decode(),
    "SESSIONM_RETAILER_ID": "sandbox-retailer",
    "INSIDER_TOKEN": "sandbox-insider-token",
    "INSIDER_PARTNER": "sandboxpartner",
    "AIR_CLIENT_ID": "sandbox-air-client",
    "AIR_SECRET": "sandbox-air-secret",
    "LINE_CHANNEL_TOKEN": "sandbox-line-token",
}


class Invalid(Exception):
    """A request the emulator refuses as a whole; `body` is the vendor-shaped error (optional)."""

    def __init__(self, status: int, message: str, body: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body
        self.headers = headers or {}


@dataclass
class Result:
    """An emulator's answer.

    `accepted` has one flag per item the body carried (Braze objects, Insider users, multicast
    recipients); None means "one item, accepted if the status is 2xx". It drives the accepted-item
    counts and the `_relay_ids` duplicate accounting."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    accepted: list[bool] | None = None


@dataclass
class Ctx:
    """One request as the emulator sees it: raw bytes, parsed JSON (without `_relay_ids`)."""

    request: web.Request
    raw: bytes
    body: Any
    hub: Hub
    tail: str  # the path relative to the emulator's prefix, e.g. "/services/trigger"
    limit_states: list[LimitState] = field(default_factory=list)

    def take(self, bucket: str) -> LimitState:
        """Draw from a rate-limit bucket decided by the body (e.g. Braze broadcast)."""
        self.hub.observer.arrive(bucket)
        state = self.hub.limiter.take(bucket)
        self.limit_states.append(state)
        return state

    @property
    def match(self) -> Mapping[str, str]:
        return self.request.match_info

    @property
    def query(self) -> Mapping[str, str]:
        return self.request.query


Handler = Callable[[Ctx], Awaitable[Result]]


@dataclass(frozen=True)
class Endpoint:
    name: str  # used in stats, e.g. "users/track"
    method: str
    path: str  # aiohttp route relative to the prefix
    handler: Handler
    limits: tuple[str, ...] = ()  # buckets every call draws from
    items: bool = True  # False for look-ups (GET): nothing to count as delivered
    json_body: bool = True


class Emulator:
    """Base class: subclasses set `name`/`prefix`, define buckets and endpoints, shape errors."""

    name = ""
    prefix = ""
    # bucket -> (limit, window seconds), before rate_scale
    buckets: ClassVar[dict[str, tuple[int, float]]] = {}

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def endpoints(self) -> list[Endpoint]:
        raise NotImplementedError

    def authorized(self, request: web.Request, ctx_tail: str, raw: bytes) -> bool:
        raise NotImplementedError

    def auth_status(self) -> int:
        return 401

    def error_body(self, status: int, message: str) -> Any:
        return {"message": message}

    def limit_headers(self, state: LimitState) -> dict[str, str]:
        return {}

    def rate_limited_message(self) -> str:
        return "Too many requests"

    def extra_stats(self) -> dict[str, Any]:
        return {}

    def reset_stats(self) -> None:
        """Clear emulator-specific counters (not the emulated world)."""


def bearer_ok(request: web.Request, token: str) -> bool:
    return request.headers.get("Authorization", "") == f"Bearer {token}"


def basic(user: str, secret: str) -> str:
    return base64.b64encode(f"{user}:{secret}".encode()).decode()


E164 = re.compile(r"^\+[1-9]\d{6,14}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def is_e164(value: Any) -> bool:
    return isinstance(value, str) and bool(E164.match(value))


def is_email(value: Any) -> bool:
    return isinstance(value, str) and bool(EMAIL.match(value))


def parse_time(value: Any, *, require_zone: bool = False) -> datetime | None:
    """ISO-8601 / RFC 3339 parsing; None when unparseable (or zone-less when a zone is needed)."""
    if not isinstance(value, str) or not value:
        return None
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        if require_zone:
            return None
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def fraction(*parts: Any) -> float:
    """A stable number in [0, 1) from the parts: deterministic choices without shared state."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def need_dict(body: Any, what: str = "body") -> dict:
    if not isinstance(body, dict):
        raise Invalid(400, f"{what} must be a JSON object")
    return body
