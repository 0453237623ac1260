"""Eagle Eye AIR: behavioural-action triggers (a customer entered an audience -> reward).

Action ``trigger`` reads params ``reference`` (the AIR action reference; required) and
``identity_type`` (default CUSTOMER_ID). The identity value is identities
``air_identity:<identity_type>``, else the canonical identity of that type (EMAIL -> email,
MOBILE -> phone, LINE_UID -> line_uid), else customer_id, else the first present of the
envelope identities named in ``identity_fallbacks`` (e.g. ``[braze_external_id]`` where the
Braze external id is the AIR customer id). ``walletTransaction.reference`` is
the envelope's event id, so AIR can recognise a repeated call. 400, 401 and 404 are permanent.

Requests are signed (`Destination.sign`): ``X-EES-AUTH-CLIENT-ID`` = config.extra["client_id"]
and ``X-EES-AUTH-HASH`` = sha256 hex of (path + query + body + secret), where the path is the
one relative to the AIR wallet base URL (``/services/trigger``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from app.destinations.base import (
    Action,
    Destination,
    HttpRequest,
    ItemInvalid,
    ItemResult,
    Reply,
    retry_after,
    short,
)
from app.destinations.mapping import resolve

TRIGGER_PATH = "/services/trigger"
# AIR identity types whose value the envelope also carries under a canonical name.
CANONICAL_IDENTITY = {"EMAIL": "email", "MOBILE": "phone", "PHONE": "phone",
                      "LINE_UID": "line_uid"}


def air_signature(path_and_query: str, body: bytes | str, secret: str) -> str:
    """sha256 hex of path + query + body + secret (AIR's X-EES-AUTH-HASH)."""
    raw = body.encode() if isinstance(body, str) else bytes(body)
    return hashlib.sha256(path_and_query.encode() + raw + secret.encode()).hexdigest()


def path_and_query(request: HttpRequest) -> str:
    if request.params:
        return f"{request.path}?{urlencode(list(request.params.items()))}"
    return request.path


def sign(config, request: HttpRequest, body: bytes) -> dict[str, str]:
    return {
        "X-EES-AUTH-CLIENT-ID": str((config.extra or {}).get("client_id", "")),
        "X-EES-AUTH-HASH": air_signature(path_and_query(request), body, config.token),
    }


class Trigger(Action):
    name = "trigger"
    idempotent = True
    max_batch = 1
    limit = "default"

    def prepare(self, delivery, config):
        envelope, params = delivery["envelope"], delivery.get("params") or {}
        reference = resolve(params.get("reference"), envelope)
        if not reference:
            raise ItemInvalid("AIR action reference missing")
        identity_type = str(params.get("identity_type") or "CUSTOMER_ID").upper()
        ids = envelope.get("identities") or {}
        # AIR finds the wallet by the value alone; the type picks which value to prefer.
        fallbacks = params.get("identity_fallbacks") or []
        if not isinstance(fallbacks, list):
            raise ItemInvalid("param 'identity_fallbacks' must be a list of identity names")
        value = (ids.get(f"air_identity:{identity_type}")
                 or ids.get(CANONICAL_IDENTITY.get(identity_type, ""))
                 or ids.get("customer_id")
                 or next((ids[name] for name in fallbacks if ids.get(str(name))), None))
        if not value:
            raise ItemInvalid(f"no AIR identity of type {identity_type}")
        if not envelope.get("event_id"):
            raise ItemInvalid("event id missing")
        return {"identityValue": str(value), "triggers": [{"reference": str(reference)}],
                "walletTransaction": {"reference": str(envelope["event_id"])}}

    def request(self, items, config) -> HttpRequest:
        return HttpRequest("POST", TRIGGER_PATH, json=items[0], limit=self.limit)

    def interpret(self, reply: Reply, items: Sequence[Any]) -> list[ItemResult]:
        if reply.ok:
            result = ItemResult("delivered", "", reply.status)
        elif reply.status in (400, 401, 404):
            # Permanent per the AIR contract: a bad request, a signature AIR refuses (wrong
            # secret or client id: retrying the same bytes cannot succeed), an unknown identity.
            body = reply.body if isinstance(reply.body, Mapping) else {}
            reason = {404: "identity_not_found", 401: "http_401"}.get(reply.status, "http_400")
            result = ItemResult("failed", reason, reply.status, detail=short(body or reply.body))
        else:
            reason = (reply.error or "transport") if reply.status == 0 else f"http_{reply.status}"
            result = ItemResult("retry", reason, reply.status, retry_after_s=retry_after(reply))
        return [result] * len(items)


def auth_headers(config) -> dict[str, str]:
    return {}


DESTINATION = Destination(
    name="air",
    actions={"trigger": Trigger()},
    limits={"default": 50.0},
    auth_headers=auth_headers,
    sign=sign,
)
