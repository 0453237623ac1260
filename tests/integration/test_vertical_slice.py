"""AIR TIER.MEMBERSHIP.MOVE on air.outbound -> normalized -> identities attached -> routed to Braze
/users/track (tier attribute + custom event) and Insider -> asserted on the sandbox's calls."""

import asyncio
import uuid

import orjson

from app.localstack import produce
from tests.integration.conftest import wait_until

WALLET = "118830195"


def tier_move(customer_id: str, event_id: str) -> dict:
    return {
        "headers": {
            "eventName": "TIER.MEMBERSHIP.MOVE", "eventDate": "2026-11-22T09:15:02",
            "eesEventId": event_id, "eesMasterEventId": str(uuid.uuid4()), "unitId": "1234",
            "clientId": "CL-1", "eesApiVersion": "2.0",
        },
        "request": {"resource": f"/wallet/{WALLET}/tier", "method": "PATCH",
                    "body": orjson.dumps({"tierId": "GOLD"}).decode()},
        "response": {"code": 200, "body": None},
        "atomicOperations": [
            {"objectType": "tierMembershipEntity", "operationType": "UPDATE",
             "objectValue": {"tierMembershipId": "777", "walletId": WALLET, "tierId": "3",
                             "balances": {"points": 12500, "spend": 830.5, "transactions": 14},
                             "expiryDate": "2027-12-31T23:59:59+00:00"}},
            {"objectType": "tierMembershipTransactionEntity", "operationType": "CREATE",
             "objectValue": {"transactionType": "MOVE", "tierId": "2", "tierIdAfter": "3",
                             "walletId": WALLET}},
        ],
        "enrichmentData": {f"walletEntity_{WALLET}": {"identities": [
            {"identityId": "1", "walletId": WALLET, "type": "CUSTOMER_ID", "value": customer_id,
             "state": "ACTIVE", "status": "ACTIVE"},
            {"identityId": "2", "walletId": WALLET, "type": "EMAIL", "value": "Mei.Lin@Example.com",
             "state": "ACTIVE", "status": "ACTIVE"},
        ]}},
    }


def test_tier_move_reaches_braze_and_insider(broker, sandbox, start_worker):
    start_worker()
    customer = f"C-{uuid.uuid4().hex[:8]}"
    record = orjson.dumps(tier_move(customer, str(uuid.uuid4())))
    asyncio.run(produce(broker.bootstrap, [("air.outbound", customer.encode(), record)]))

    def braze_for_customer():
        attrs, events = [], []
        for call in sandbox.calls("braze"):
            body = call.get("body") or {}
            attrs += [a for a in body.get("attributes", []) if a.get("external_id") == customer]
            events += [e for e in body.get("events", []) if e.get("external_id") == customer]
        return (attrs, events) if attrs and events else None

    attrs, events = wait_until(braze_for_customer, 60, what="braze /users/track calls")
    assert any(str(a.get("loyalty_tier")) == "3" for a in attrs), attrs
    assert any(e["name"] == "tier_moved" for e in events), events
    assert all(e.get("time", "").startswith("2026-11-22T09:15:02") for e in events)

    def insider_users():
        users = [u for call in sandbox.calls("insider") for u in (call.get("body") or {}).get("users", [])
                 if (u.get("identifiers") or {}).get("custom", {}).get("customer_id") == customer
                 or (u.get("identifiers") or {}).get("email") == "mei.lin@example.com"]
        return users or None

    users = wait_until(insider_users, 60, what="insider upsert")
    assert users[0]["identifiers"]["email"] == "mei.lin@example.com"  # normalized e-mail
    assert any(ev.get("event_name") == "tier_moved" for u in users for ev in u.get("events", []))
