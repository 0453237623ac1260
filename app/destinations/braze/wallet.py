"""The live SessionM offer wallet for Braze trigger properties (`with_wallet: true`).

A Braze trigger action receives a `send` for Braze only, so the wallet look-up has its own
sender: `WalletProvider.from_settings` builds one from ``settings.destination("sessionm")`` with the
shared `HttpSender` (its own HTTP connection pool, SessionM's rate limit and metrics, and the shorter
``WALLET_TIMEOUT_S``). The delivery core stays generic.

- Cache: a wallet is reused for ``WALLET_CACHE_S`` seconds per user (0 = no cache); concurrent
  look-ups for one user share one call.
- Bounded concurrency: at most ``WALLET_CONCURRENCY`` look-ups in flight per worker.
- Failing fast: after 3 consecutive failures the provider answers "unavailable" for 5 s without
  calling, so a SessionM outage costs one time-out per few seconds, not one per message.
- Degradation (`WalletUnavailable`) is decided by the caller: send without the wallet
  (``wallet_status: "unavailable"``) or hold the item for a retry.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from app.destinations.base import HttpRequest, Reply

FAIL_AFTER = 3  # consecutive failures before failing fast
FAIL_FAST_S = 5.0
MAX_CACHED = 10_000
OFFER_KEYS = ("offer_id", "user_offer_id", "offer_group_id", "offer_type", "name", "description",
              "terms", "logo_uri", "pos_discount_id", "expiration_date", "points")


class WalletUnavailable(Exception):
    """The wallet could not be read; the message is a short reason code (no personal data)."""


class WalletProvider:
    def __init__(self, config, send: Callable[[HttpRequest], Awaitable[Reply]],
                 cache_s: float = 30.0, concurrency: int = 8, fallback: str = "send",
                 clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.fallback = fallback  # "send" | "retry", when the routing rule does not say
        self.send = send
        self.cache_s = cache_s
        self.clock = clock
        self.slots = asyncio.Semaphore(max(1, concurrency))
        self.cache: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self.inflight: dict[str, asyncio.Future] = {}
        self.failures = 0
        self.down_until = 0.0
        self.calls = 0
        self._close: Callable[[], Awaitable[None]] | None = None

    @classmethod
    def from_settings(cls, settings) -> WalletProvider:
        from dataclasses import replace

        from app.delivery.core import HttpSender
        from app.destinations.sessionm import DESTINATION as SESSIONM

        config = settings.destination("sessionm")
        sender = HttpSender(SESSIONM, config,
                            replace(settings, request_timeout_s=settings.wallet_timeout_s))
        provider = cls(config, sender.send, settings.wallet_cache_s, settings.wallet_concurrency,
                       settings.wallet_fallback)
        provider._close = sender.close
        return provider

    async def close(self) -> None:
        if self._close:
            await self._close()

    async def wallet(self, user_id: str) -> dict[str, Any]:
        """SessionM's wallet payload for the user; WalletUnavailable when it can't be read."""
        now = self.clock()
        cached = self.cache.get(user_id)
        if cached and now - cached[0] < self.cache_s:
            return cached[1]
        if now < self.down_until:
            raise WalletUnavailable("wallet_failing_fast")
        pending = self.inflight.get(user_id)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(user_id))
            self.inflight[user_id] = pending
            pending.add_done_callback(lambda _f, u=user_id: self.inflight.pop(u, None))
        return await asyncio.shield(pending)

    async def _fetch(self, user_id: str) -> dict[str, Any]:
        from app.destinations.sessionm import OffersError, get_user_offers

        async with self.slots:
            self.calls += 1
            try:
                payload = await get_user_offers(self.send, self.config, user_id)
            except OffersError as exc:
                self._failed()
                raise WalletUnavailable(f"wallet_{exc.result.reason or 'error'}") from None
        self.failures = 0
        if self.cache_s > 0:
            self.cache[user_id] = (self.clock(), payload)
            self.cache.move_to_end(user_id)
            while len(self.cache) > MAX_CACHED:
                self.cache.popitem(last=False)
        return payload

    def _failed(self) -> None:
        self.failures += 1
        if self.failures >= FAIL_AFTER:
            self.down_until = self.clock() + FAIL_FAST_S
            self.failures = 0


def _expired(offer: Mapping[str, Any], now: datetime) -> bool:
    raw = offer.get("expiration_date")
    if not isinstance(raw, str) or not raw:
        return False
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when <= now


def wallet_properties(payload: Mapping[str, Any], max_offers: int = 10,
                      now: datetime | None = None) -> dict[str, Any]:
    """Trigger properties from a wallet: live offers (expired ones dropped), points, status."""
    now = now or datetime.now(UTC)
    offers = [
        {k: o[k] for k in OFFER_KEYS if o.get(k) not in (None, "")}
        for o in payload.get("user_offers") or []
        if isinstance(o, Mapping) and not _expired(o, now)
    ]
    props: dict[str, Any] = {"wallet_status": "live", "wallet_offers": offers[:max_offers],
                             "wallet_offer_count": len(offers)}
    for key in ("available_points", "total_points"):
        if payload.get(key) is not None:
            props[f"wallet_{key}"] = payload[key]
    return props


UNAVAILABLE = {"wallet_status": "unavailable"}

_provider: WalletProvider | None = None


def wallet_provider() -> WalletProvider:
    """The worker's provider, built on first use from the environment's settings."""
    global _provider
    if _provider is None:
        from app.config import load_settings

        _provider = WalletProvider.from_settings(load_settings())
    return _provider


def set_wallet_provider(provider: WalletProvider | None) -> None:
    """Install a provider (tests, or a worker that builds its own)."""
    global _provider
    _provider = provider
