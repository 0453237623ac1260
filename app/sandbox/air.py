"""Eagle Eye AIR wallet emulator: `POST /air/services/trigger` (behavioural-action triggers).

Signature rule (shared with the relay's AIR client through `air_signature`):

    X-EES-AUTH-HASH = sha256_hex(path_and_query + body + secret)

where `path_and_query` is the request path *relative to the AIR wallet base URL* exactly as the
client sent it, starting with "/" (here `/services/trigger`), followed by "?" and the raw query
string when there is one; `body` is the exact bytes sent (including `_relay_ids` in sandbox mode);
`secret` is AIR_SECRET as UTF-8. `X-EES-AUTH-CLIENT-ID` must equal AIR_CLIENT_ID. A wrong client id
or hash is 401.

Why the rest: an identity value starting with "unknown" is 404 (a permanent failure for the relay);
a `walletTransaction.reference` seen before returns the original transaction without a second
reward (the reference is how a repeat call is recognised), counted as `repeat_references`. Each
new trigger credits points and, when `air_outbound` is set, hands AIR's outbound `SERVICE.TRIGGER`
event document to it, as real AIR would publish it.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from aiohttp import web

from app.sandbox.air_events import service_trigger_event
from app.sandbox.core import Ctx, Emulator, Endpoint, Invalid, Result, fraction, need_dict

log = structlog.get_logger(__name__)
POINTS_PER_TRIGGER = 100


def air_signature(path_and_query: str, body: bytes, secret: str) -> str:
    """Hex SHA-256 of path+query, then the body bytes, then the secret."""
    return hashlib.sha256(path_and_query.encode() + body + secret.encode()).hexdigest()


def _digits(*parts: Any, width: int = 9) -> str:
    return str(int(fraction(*parts) * 10**width)).rjust(width, "1")


class Air(Emulator):
    name = "air"
    prefix = "/air"

    def __init__(self, hub) -> None:
        super().__init__(hub)
        self.transactions: dict[str, dict[str, Any]] = {}  # reference -> transaction
        self.balances: dict[str, int] = {}  # wallet id -> points
        self.sequence = 0
        self.reset_stats()

    def reset_stats(self) -> None:
        self.counts = {"triggers": 0, "repeat_references": 0, "outbound_sent": 0,
                       "outbound_failed": 0}

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("services/trigger", "POST", "/services/trigger", self.trigger)]

    def authorized(self, request: web.Request, tail: str, raw: bytes) -> bool:
        keys = self.hub.keys
        path = tail + (f"?{request.query_string}" if request.query_string else "")
        expected = air_signature(path, raw, keys["AIR_SECRET"])
        given = request.headers.get("X-EES-AUTH-HASH", "")
        return (request.headers.get("X-EES-AUTH-CLIENT-ID") == keys["AIR_CLIENT_ID"]
                and hmac.compare_digest(given.lower(), expected))

    def error_body(self, status: int, message: str) -> Any:
        code = {400: "PE", 401: "AU", 404: "NF", 429: "RL"}.get(status, "SE")
        return {"errorCode": code, "errorMessage": message}

    async def trigger(self, ctx: Ctx) -> Result:
        body = need_dict(ctx.body)
        identity = body.get("identityValue")
        if not isinstance(identity, str) or not identity:
            raise Invalid(400, "identityValue is required")
        triggers = body.get("triggers")
        if not isinstance(triggers, list) or not triggers or not all(
            isinstance(t, dict) and isinstance(t.get("reference"), str) and t["reference"]
            for t in triggers
        ):
            raise Invalid(400, "triggers must be a non-empty list of {reference}")
        wtx = body.get("walletTransaction", {})
        if not isinstance(wtx, dict) or ("reference" in wtx and not isinstance(
                wtx["reference"], str)):
            raise Invalid(400, "walletTransaction.reference must be a string")
        if identity.startswith("unknown"):
            raise Invalid(404, "Identity not found")
        reference = wtx.get("reference") or self.hub.uuid4()
        if reference in self.transactions:
            self.counts["repeat_references"] += 1
            return Result(200, self.transactions[reference])
        self.counts["triggers"] += 1
        self.sequence += 1
        wallet_id = _digits("wallet", identity)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
        transaction = {
            "walletTransactionId": f"{self.sequence:04d}{_digits('wtx', reference, width=6)}",
            "parentWalletTransactionId": "0", "walletId": wallet_id, "reference": reference,
            "type": "SERVICE", "status": "COMPLETED", "meta": None,
            "triggers": [{"reference": t["reference"]} for t in triggers],
            "dateCreated": now, "lastUpdated": now,
        }
        self.transactions[reference] = transaction
        points = POINTS_PER_TRIGGER * len(triggers)
        before = self.balances.get(wallet_id, 0)
        self.balances[wallet_id] = before + points
        if self.hub.air_outbound is not None:
            event = service_trigger_event(
                event_id=self.hub.uuid4(), master_id=self.hub.uuid4(),
                client_id=self.hub.keys["AIR_CLIENT_ID"], wallet_id=wallet_id,
                identity_value=identity, identity_id=_digits("identity", identity),
                transaction=transaction, request_body=orjson.dumps(body), points=points,
                before=before, action_account_id=_digits("action", reference),
                points_account_id=_digits("points", wallet_id),
            )
            self.hub.spawn(self._emit(event))
        return Result(200, transaction)

    async def _emit(self, event: dict[str, Any]) -> None:
        try:
            await self.hub.air_outbound(event)
            self.counts["outbound_sent"] += 1
        except Exception as exc:  # noqa: BLE001 - the callback is the caller's code; keep serving
            self.counts["outbound_failed"] += 1
            log.warning("sandbox.air.outbound_failed", error=type(exc).__name__)

    def extra_stats(self) -> dict[str, Any]:
        return dict(self.counts)
