"""The control plane under `/_sandbox/`: inspect what arrived, reset, inject faults.

Why over HTTP as well as in Python: `relay run` and the integration tests may run the sandbox in
another process (`relay sandbox`), and an operator can poke a running sandbox with curl. Every
route mirrors a `Sandbox` method.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from app.sandbox.faults import parse_plan
from app.sandbox.server import Hub, json_response, stats


def add_control_routes(app: web.Application, hub: Hub, credentials) -> None:
    async def get_calls(request: web.Request) -> web.Response:
        return json_response(200, hub.recorder.list(request.query.get("destination") or None))

    async def delete_calls(request: web.Request) -> web.Response:
        reset(hub)
        return json_response(204, None)

    async def get_stats(request: web.Request) -> web.Response:
        return json_response(200, stats(hub))

    async def get_ids(request: web.Request) -> web.Response:
        return json_response(200, hub.recorder.accepted_ids())

    async def get_faults(request: web.Request) -> web.Response:
        return json_response(200, hub.faults.public())

    async def post_faults(request: web.Request) -> web.Response:
        try:
            data = orjson.loads(await request.read())
            dest, plan = parse_plan(data if isinstance(data, dict) else {"destination": None})
        except (ValueError, orjson.JSONDecodeError) as exc:
            return json_response(400, {"error": str(exc)})
        if dest != "*" and dest not in hub.emulators:
            return json_response(400, {"error": f"unknown destination {dest!r}"})
        hub.faults.set(dest, plan)
        return json_response(200, hub.faults.public())

    async def delete_faults(request: web.Request) -> web.Response:
        hub.faults.clear()
        return json_response(204, None)

    async def get_credentials(request: web.Request) -> web.Response:
        return json_response(200, credentials())

    async def health(request: web.Request) -> web.Response:
        return json_response(200, {"status": "ok", "destinations": sorted(hub.emulators)})

    app.router.add_get("/_sandbox/calls", get_calls)
    app.router.add_delete("/_sandbox/calls", delete_calls)
    app.router.add_get("/_sandbox/stats", get_stats)
    app.router.add_get("/_sandbox/ids", get_ids)
    app.router.add_get("/_sandbox/faults", get_faults)
    app.router.add_post("/_sandbox/faults", post_faults)
    app.router.add_delete("/_sandbox/faults", delete_faults)
    app.router.add_get("/_sandbox/credentials", get_credentials)
    app.router.add_get("/_sandbox/health", health)


def reset(hub: Hub) -> None:
    """Forget recorded calls, counters and observed rates; the emulated world (subscriptions,
    retry keys, topics, wallets) is kept, as a real vendor would keep it."""
    hub.recorder.reset()
    hub.observer.reset()
    for emu in hub.emulators.values():
        emu.reset_stats()
