"""Local emulators of every destination API, on one HTTP server on 127.0.0.1.

Why: the relay must be runnable and testable end to end without vendor accounts. `Sandbox` serves
MAAC (`/maac`), LINE (`/line`), Braze (`/braze`), Attentive (`/attentive/v1`), SessionM
(`/sessionm/core`, `/sessionm/connect`), Insider (`/insider`) and AIR (`/air`), each checking auth,
validating bodies, enforcing rate limits and answering with the vendor's success, partial-success
and error shapes (see each module's docstring). Everything the relay sends is recorded in memory
and exposed as Python methods and under `/_sandbox/` (calls, stats, accepted delivery ids, faults).

    sandbox = Sandbox(webhook_url="http://127.0.0.1:6066/webhooks/maac")
    await sandbox.start()
    os.environ.update(sandbox.credentials())
    ...
    await sandbox.stop()
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, Self

import aiohttp
import structlog
from aiohttp import web

from app.sandbox.air import Air
from app.sandbox.attentive import Attentive
from app.sandbox.braze import Braze
from app.sandbox.control import add_control_routes, reset
from app.sandbox.faults import Faults, parse_plan
from app.sandbox.insider import Insider
from app.sandbox.limits import Limiter, Observer
from app.sandbox.line import Line
from app.sandbox.maac import Maac
from app.sandbox.recorder import Recorder
from app.sandbox.server import MAX_BODY, Hub, mount, stats
from app.sandbox.sessionm import SessionM

__all__ = ["DESTINATIONS", "Sandbox", "serve"]

log = structlog.get_logger(__name__)
EMULATORS = (Maac, Line, Braze, Attentive, SessionM, Insider, Air)
DESTINATIONS = tuple(e.name for e in EMULATORS)


class Sandbox:
    """Every destination emulator on one aiohttp server (port 0 picks a free port).

    Beyond the documented knobs: `rate_scale` multiplies every rate limit (tests use tight
    limits), `multicast_delay_s` is how long a MAAC multicast stays pending,
    `webhook_retry_delays` the MAAC webhook retry schedule, `max_calls` how many accepted calls
    are kept for `calls()` (counters are unbounded)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        webhook_url: str | None = None,
        webhook_secret: str = "sandbox-webhook-secret",
        open_share: float = 0.5,
        webhook_delay_s: float = 0.5,
        air_outbound: Callable[[dict], Awaitable[None]] | None = None,
        seed: int | None = None,
        rate_scale: float = 1.0,
        multicast_delay_s: float = 0.2,
        webhook_retry_delays: tuple[float, ...] = (1.0, 2.0, 4.0),
        max_calls: int = 200_000,
    ) -> None:
        if rate_scale <= 0:
            raise ValueError("rate_scale must be positive")
        self.host = host
        self.port = port
        rng = random.Random(seed)
        self.hub = Hub(
            rng=rng, limiter=Limiter(rate_scale), observer=Observer(),
            faults=Faults(random.Random(seed)),
            recorder=Recorder(max_calls), webhook_url=webhook_url, webhook_secret=webhook_secret,
            open_share=open_share, webhook_delay_s=webhook_delay_s,
            webhook_retry_delays=tuple(webhook_retry_delays), multicast_delay_s=multicast_delay_s,
            air_outbound=air_outbound,
        )
        self.app = web.Application(client_max_size=MAX_BODY)
        for cls in EMULATORS:
            mount(self.app, self.hub, cls(self.hub))
        add_control_routes(self.app, self.hub, self.credentials)
        self._runner: web.AppRunner | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked
        self.hub.http = aiohttp.ClientSession()

    async def stop(self) -> None:
        tasks = list(self.hub.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.hub.http is not None:
            await self.hub.http.close()
            self.hub.http = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for pending background work (webhooks, AIR outbound events)."""
        pending = list(self.hub.tasks)
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def credentials(self) -> dict[str, str]:
        """The environment variables that point the relay at this sandbox."""
        url, keys = self.url, self.hub.keys
        return {
            "MAAC_BASE_URL": f"{url}/maac",
            "MAAC_TOKEN": keys["MAAC_TOKEN"],
            "MAAC_WEBHOOK_SECRET": self.hub.webhook_secret,
            "LINE_BASE_URL": f"{url}/line",
            "LINE_CHANNEL_TOKEN": keys["LINE_CHANNEL_TOKEN"],
            "BRAZE_BASE_URL": f"{url}/braze",
            "BRAZE_API_KEY": keys["BRAZE_API_KEY"],
            "ATTENTIVE_BASE_URL": f"{url}/attentive/v1",
            "ATTENTIVE_API_KEY": keys["ATTENTIVE_API_KEY"],
            "ATTENTIVE_SIGNUP_SOURCE_ID": keys["ATTENTIVE_SIGNUP_SOURCE_ID"],
            "SESSIONM_CORE_URL": f"{url}/sessionm/core",
            "SESSIONM_CONNECT_URL": f"{url}/sessionm/connect",
            "SESSIONM_API_KEY": keys["SESSIONM_API_KEY"],
            "SESSIONM_API_SECRET": keys["SESSIONM_API_SECRET"],
            "SESSIONM_OFFERS_AUTH": keys["SESSIONM_OFFERS_AUTH"],
            "SESSIONM_RETAILER_ID": keys["SESSIONM_RETAILER_ID"],
            "INSIDER_BASE_URL": f"{url}/insider",
            "INSIDER_TOKEN": keys["INSIDER_TOKEN"],
            "INSIDER_PARTNER": keys["INSIDER_PARTNER"],
            "AIR_WALLET_URL": f"{url}/air",
            "AIR_CLIENT_ID": keys["AIR_CLIENT_ID"],
            "AIR_SECRET": keys["AIR_SECRET"],
        }

    # -- inspection -----------------------------------------------------------------------
    def calls(self, destination: str | None = None) -> list[dict[str, Any]]:
        """Accepted (2xx) calls: {destination, endpoint, method, path, status, body, relay_ids, at}."""
        return self.hub.recorder.list(destination)

    def stats(self) -> dict[str, Any]:
        return stats(self.hub)

    def accepted_ids(self) -> dict[str, int]:
        """Relay delivery id -> number of times a destination accepted it."""
        return self.hub.recorder.accepted_ids()

    def reset(self) -> None:
        """Forget calls, counters and observed rates (the emulated world is kept)."""
        reset(self.hub)

    def emulator(self, name: str) -> Any:
        """The emulator object (e.g. to read SessionM tags or Attentive subscriptions in tests)."""
        return self.hub.emulators[name]

    # -- faults ---------------------------------------------------------------------------
    def set_faults(
        self,
        destination: str = "*",
        *,
        error_rate: float = 0.0,
        statuses: list[int] | tuple[int, ...] = (500,),
        timeout_rate: float = 0.0,
        latency_ms: float = 0.0,
        outage_s: float = 0.0,
        timeout_s: float = 30.0,
    ) -> None:
        """Same fields as POST /_sandbox/faults; raises ValueError for bad values."""
        if destination != "*" and destination not in self.hub.emulators:
            raise ValueError(f"unknown destination {destination!r}")
        dest, plan = parse_plan({
            "destination": destination, "error_rate": error_rate, "statuses": list(statuses),
            "timeout_rate": timeout_rate, "latency_ms": latency_ms, "outage_s": outage_s,
            "timeout_s": timeout_s,
        })
        self.hub.faults.set(dest, plan)

    def clear_faults(self) -> None:
        self.hub.faults.clear()


async def serve(host: str = "127.0.0.1", port: int = 0, **kw: Any) -> None:
    """Run a Sandbox until cancelled (`relay sandbox`). `on_start`, if given, is called with the
    started Sandbox (e.g. to print its URL and credentials); other keywords go to `Sandbox`."""
    on_start = kw.pop("on_start", None)
    sandbox = Sandbox(host=host, port=port, **kw)
    await sandbox.start()
    # The URL only: tokens are never logged; they are served at /_sandbox/credentials.
    log.info("sandbox.started", url=sandbox.url, credentials=f"{sandbox.url}/_sandbox/credentials")
    try:
        if on_start is not None:
            result = on_start(sandbox)
            if asyncio.iscoroutine(result):
                await result
        await asyncio.Event().wait()
    finally:
        await sandbox.stop()
