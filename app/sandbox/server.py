"""The one aiohttp application serving every emulator, and the request pipeline they share.

Why one pipeline: faults, auth, rate limits, `_relay_ids` stripping and recording must behave the
same for every destination, or the relay would be tested against inconsistent fakes. Order per call:
count the arrival (rate observation) -> fault plan (latency, outage, error, hang) -> auth -> rate-limit
buckets -> JSON parsing -> the emulator's handler -> record (only 2xx calls count as accepted).
No access log: request paths can carry personal data (Attentive looks up by phone in the query).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from app.sandbox.core import KEYS, Ctx, Emulator, Endpoint, Invalid
from app.sandbox.faults import Faults
from app.sandbox.limits import Limiter, LimitState, Observer, RateLimited
from app.sandbox.recorder import Recorder

MAX_BODY = 16 * 1024 * 1024  # above every vendor limit, so the emulators can answer 413/400 themselves


@dataclass
class Hub:
    """State shared by the emulators and the control plane of one Sandbox."""

    rng: random.Random
    limiter: Limiter
    observer: Observer
    faults: Faults
    recorder: Recorder
    webhook_url: str | None = None
    webhook_secret: str = "sandbox-webhook-secret"
    open_share: float = 0.5
    webhook_delay_s: float = 0.5
    webhook_retry_delays: tuple[float, ...] = (1.0, 2.0, 4.0)
    multicast_delay_s: float = 0.2
    air_outbound: Callable[[dict], Awaitable[None]] | None = None
    keys: dict[str, str] = field(default_factory=lambda: dict(KEYS))
    emulators: dict[str, Emulator] = field(default_factory=dict)
    endpoint_names: dict[str, list[str]] = field(default_factory=dict)
    tasks: set[asyncio.Task] = field(default_factory=set)
    http: aiohttp.ClientSession | None = None  # outgoing calls (webhooks), open while started

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        """Background work (webhooks, AIR outbound events) that `Sandbox.stop` cancels."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def uuid4(self) -> str:
        """A version-4 UUID from the seeded generator (reproducible ids)."""
        value = self.rng.getrandbits(128)
        value &= ~(0xF000 << 64)
        value |= 0x4000 << 64
        value &= ~(0xC000 << 48)
        value |= 0x8000 << 48
        text = f"{value:032x}"
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    if body is None:
        return web.Response(status=status, headers=headers)
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def _split_relay_ids(body: Any) -> tuple[Any, list[str] | None]:
    if isinstance(body, dict) and "_relay_ids" in body:
        ids = body.pop("_relay_ids")
        if isinstance(ids, list):
            return body, [str(i) for i in ids]
    return body, None


async def dispatch(hub: Hub, emu: Emulator, ep: Endpoint, request: web.Request) -> web.Response:
    name = emu.name
    hub.observer.arrive(f"{name}:{ep.name}")
    for bucket in ep.limits:
        hub.observer.arrive(bucket)
    # Read first, like a real server: with added latency the call is still acted on after a
    # client that stopped waiting has gone (an answer lost to the client's time-out).
    raw = await request.read()
    fault = hub.faults.decide(name)
    if fault is not None:
        if fault.latency_s:
            await asyncio.sleep(fault.latency_s)
        if fault.hang_s:
            hub.recorder.status(name, "timeout")
            await asyncio.sleep(fault.hang_s)
            return json_response(504, emu.error_body(504, "sandbox fault: timed out"))
        if fault.status:
            hub.recorder.status(name, fault.status)
            headers = {}
            if fault.status == 429 and ep.limits:  # look like the vendor's own 429
                limit, window_s = hub.limiter.specs[ep.limits[-1]]
                headers = emu.limit_headers(LimitState(ep.limits[-1], limit, 0, 1.0, window_s))
                body = emu.error_body(429, emu.rate_limited_message())
            else:
                body = emu.error_body(fault.status, "sandbox fault")
            return json_response(fault.status, body, headers)

    tail = request.path[len(emu.prefix):] or "/"
    if not emu.authorized(request, tail, raw):
        status = emu.auth_status()
        hub.recorder.status(name, status)
        return json_response(status, emu.error_body(status, "authentication failed"))

    ctx = Ctx(request, raw, None, hub, tail)
    relay_ids = None
    try:
        for bucket in ep.limits:
            ctx.limit_states.append(hub.limiter.take(bucket))
        if ep.json_body and raw:
            try:
                ctx.body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise Invalid(400, "body is not valid JSON") from None
            ctx.body, relay_ids = _split_relay_ids(ctx.body)
        result = await ep.handler(ctx)
    except RateLimited as exc:
        hub.recorder.status(name, 429)
        headers = emu.limit_headers(exc.state)
        return json_response(429, emu.error_body(429, emu.rate_limited_message()), headers)
    except Invalid as exc:
        hub.recorder.status(name, exc.status)
        body = exc.body if exc.body is not None else emu.error_body(exc.status, exc.message)
        headers = emu.limit_headers(ctx.limit_states[-1]) if ctx.limit_states else {}
        headers.update(exc.headers)
        return json_response(exc.status, body, headers)

    hub.recorder.status(name, result.status)
    if 200 <= result.status < 300:
        hub.recorder.accept(
            name, ep.name, request.method, request.path_qs, result.status, ctx.body,
            relay_ids, result.accepted, ep.items,
        )
    headers = dict(result.headers)
    if ctx.limit_states:
        headers.update(emu.limit_headers(ctx.limit_states[-1]))
    return json_response(result.status, result.body, headers)


def mount(app: web.Application, hub: Hub, emu: Emulator) -> None:
    """Register an emulator's buckets, observers and routes under its prefix."""
    for bucket, (limit, window_s) in emu.buckets.items():
        hub.limiter.define(bucket, limit, window_s)
        hub.observer.define(bucket, window_s, hub.limiter.specs[bucket][0])
    names = []
    for ep in emu.endpoints():
        if ep.limits:
            limit, window_s = hub.limiter.specs[ep.limits[-1]]
        else:
            limit, window_s = None, 1.0
        hub.observer.define(f"{emu.name}:{ep.name}", window_s, limit)
        names.append(ep.name)

        async def handle(request: web.Request, _ep: Endpoint = ep) -> web.Response:
            return await dispatch(hub, emu, _ep, request)

        app.router.add_route(ep.method, emu.prefix + ep.path, handle)
    hub.emulators[emu.name] = emu
    hub.endpoint_names[emu.name] = names


def stats(hub: Hub) -> dict[str, Any]:
    """Per destination: requests by status, accepted items, duplicates, observed vs allowed rates."""
    out = {}
    for name, emu in hub.emulators.items():
        entry = hub.recorder.summary(name)
        endpoints = [f"{name}:{n}" for n in hub.endpoint_names[name]]
        rates = {key.split(":", 1)[1]: value
                 for key, value in hub.observer.report(endpoints).items()}
        entry["rates"] = rates
        entry["buckets"] = hub.observer.report(list(emu.buckets))
        entry.update(emu.extra_stats())
        out[name] = entry
    return out
