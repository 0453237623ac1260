"""The outbound `SERVICE.TRIGGER` event AIR emits after a behavioural action fires.

Why build it here: the relay's AIR normaliser must see the same document shape AIR sends
(`headers`, `request`, `response`, `atomicOperations`, `enrichmentData`), including the quirks the
contract lists: `eventDate` without a timezone and `request.body` as a JSON *string*. The reward is a
points CREDIT on the wallet's POINTS account, after a BEHAVIOURAL_ACTION account CREATE and REDEEM.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _account(account_id: str, wallet_id: str, kind: str, client_type: str | None,
             balances: dict[str, int]) -> dict[str, Any]:
    return {
        "accountId": account_id, "walletId": wallet_id, "campaignId": "1000001",
        "type": kind, "clientType": client_type, "status": "ACTIVE", "state": "LOADED",
        "dates": {"start": _now(), "end": None}, "meta": None, "balances": balances,
        "relationships": {}, "dateCreated": _now(), "lastUpdated": _now(),
    }


def service_trigger_event(
    *, event_id: str, master_id: str, client_id: str, wallet_id: str, identity_value: str,
    identity_id: str, transaction: dict[str, Any], request_body: bytes, points: int,
    before: int, action_account_id: str, points_account_id: str,
) -> dict[str, Any]:
    after = before + points
    bal_before = {"current": before, "usable": before, "lifetime": before, "pending": 0, "locked": 0}
    bal_after = {"current": after, "usable": after, "lifetime": after, "pending": 0, "locked": 0}
    action = _account(action_account_id, wallet_id, "BEHAVIOURAL_ACTION", None,
                      {"available": 0, "refundable": 0})
    points_account = _account(points_account_id, wallet_id, "POINTS", "RETAIL_POINTS", bal_after)
    wtx = transaction["walletTransactionId"]
    ops = [
        {"objectType": "walletAccountEntity", "operationType": "CREATE", "objectValue": action},
        {"objectType": "walletAccountTransactionEntity", "operationType": "CREATE",
         "objectValue": {"accountTransactionId": f"{wtx}1", "accountId": action_account_id,
                         "walletTransactionId": wtx, "account": action, "event": "REDEEM",
                         "value": 1, "dateCreated": _now()}},
        {"objectType": "walletAccountTransactionEntity", "operationType": "CREATE",
         "objectValue": {"accountTransactionId": f"{wtx}2", "accountId": points_account_id,
                         "walletTransactionId": wtx, "account": points_account, "event": "CREDIT",
                         "value": points, "balancesBefore": bal_before, "balancesAfter": bal_after,
                         "dateCreated": _now()}},
        {"objectType": "walletTransactionEntity", "operationType": "CREATE",
         "objectValue": transaction},
    ]
    identity = {
        "identityId": identity_id, "walletId": wallet_id, "type": "CUSTOMER_ID",
        "friendlyName": None, "value": identity_value, "safeValue": identity_value,
        "secret": None, "mobileWallet": None, "meta": None, "state": "DEFAULT",
        "status": "ACTIVE", "dates": {"start": _now(), "end": None},
        "dateCreated": _now(), "lastUpdated": _now(),
    }
    return {
        "headers": {
            "eventName": "SERVICE.TRIGGER", "eventDate": _now(), "eesEventId": event_id,
            "eesMasterEventId": master_id, "unitId": "1000", "unitFriendlyName": "Sandbox unit",
            "clientId": client_id, "eesApiVersion": "2.0", "externalMessageId": None,
            "callerIp": "127.0.0.1", "eesEnvironmentType": "SANDBOX",
            "eesSubsystemId": "wallet",
        },
        "request": {"resource": "/services/trigger", "method": "POST",
                    "body": request_body.decode("utf-8", "replace"),
                    "contentType": "application/json", "customHeaders": []},
        "response": {"code": 200, "body": orjson.loads(orjson.dumps(transaction)),
                     "contentType": "application/json"},
        "atomicOperations": ops,
        "enrichmentData": {f"walletEntity_{wallet_id}": {"identities": [identity]}},
    }
