"""Realistic sample traffic for every ingress topic (demos, `relay run`, benchmarks, tests).

`sample_records(n, seed)` returns `(topic, key, value bytes)` tuples: a deterministic mix over the
seven ingress topics, with customers shared across sources, TW/JP/US phones, AIR documents of
1-4 KB and a small share of deliberately invalid records. `realistic_air(event_name, ...)` builds
one AIR outbound document as AIR sends it (string bodies, enrichment data, atomic operations).
"""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

INGRESS_TOPICS = (
    "air.outbound",
    "loyalty.actions",
    "journey.triggers",
    "audience.membership",
    "identity.updates",
    "sessionm.messages",
    "maac.results",
)

AIR_EVENT_NAMES = (
    "SERVICE.WALLET.CREATE",
    "SERVICE.WALLET.ACCOUNTS.CREATE",
    "WALLET.CONSUMER.CREATE",
    "WALLET.CONSUMER.UPDATE",
    "WALLET.ACCOUNT.CREATE.SCHEME",
    "WALLET.ACCOUNT.CREATE.CAMPAIGN",
    "WALLET.ACCOUNT.CREATE.PLAN",
    "WALLET.ACCOUNT.UPDATE",
    "SERVICE.WALLET.DELETE",
    "POSCONNECT.WALLET.OPEN",
    "POSCONNECT.WALLET.SETTLE",
    "POSCONNECT.WALLET.FULFIL",
    "POSCONNECT.WALLET.REFUND",
    "POSCONNECT.WALLET.SPEND",
    "POSCONNECT.WALLET.SPEND.VOID",
    "SERVICE.TRIGGER",
    "TIER.MEMBERSHIP.CREATE",
    "TIER.MEMBERSHIP.CREDIT",
    "TIER.MEMBERSHIP.DEBIT",
    "TIER.MEMBERSHIP.MOVE",
    "TIER.MEMBERSHIP.ADJUST",
    "WALLET.ACCOUNT.TRANSACTION.REDEEM",
)

# How often each AIR event appears in the sample mix (POS traffic dominates in real life).
AIR_WEIGHTS = {
    "POSCONNECT.WALLET.SETTLE": 30, "POSCONNECT.WALLET.OPEN": 6, "POSCONNECT.WALLET.FULFIL": 3,
    "POSCONNECT.WALLET.REFUND": 3, "POSCONNECT.WALLET.SPEND": 3,
    "POSCONNECT.WALLET.SPEND.VOID": 1, "SERVICE.WALLET.ACCOUNTS.CREATE": 8,
    "TIER.MEMBERSHIP.MOVE": 8, "WALLET.CONSUMER.UPDATE": 8, "WALLET.ACCOUNT.TRANSACTION.REDEEM": 4,
    "SERVICE.TRIGGER": 3, "TIER.MEMBERSHIP.CREDIT": 3,
}

TOPIC_WEIGHTS = {
    "air.outbound": 38, "journey.triggers": 16, "loyalty.actions": 10,
    "audience.membership": 10, "identity.updates": 10, "sessionm.messages": 10,
    "maac.results": 6,
}

# Braze campaigns and canvases that SessionM messages trigger (API-triggered delivery).
BRAZE_CAMPAIGNS = tuple(f"0b7d3c2e-5a41-4f0e-9c6d-{n:012x}" for n in range(1, 13))
BRAZE_CANVASES = tuple(f"6f2e9a14-c3b8-4d57-8e21-{n:012x}" for n in range(1, 7))

BASE_TIME = datetime(2026, 11, 20, 9, 0, 0, tzinfo=UTC)
UNIT_ID = "1234567"
# Customer indexes of sign-ups (`new_share`): drawn at random above this, beyond any pre-loaded
# member and without assuming anything about the chunk sizes or seeds of the caller.
NEW_CUSTOMER_BASE = 50_000_000
CLIENT_ID = "4ML8RQZ2TF3KXW0PJ7CE"

FIRST_NAMES = ("Mei", "Yu-Ting", "Chia-Hao", "Haruto", "Yui", "Sota", "Emma", "Liam", "Olivia",
               "Noah", "Wei", "Akari")
LAST_NAMES = ("Chen", "Lin", "Wang", "Sato", "Suzuki", "Takahashi", "Smith", "Johnson",
              "Garcia", "Huang")
PRODUCTS = (
    ("4710088412345", "Oolong tea 600ml", 35), ("4710105031234", "Pineapple cake box", 380),
    ("4901234567894", "Matcha KitKat", 299), ("0012000161155", "Sparkling water 12pk", 459),
    ("4710957000123", "Rice cracker", 89), ("4902102072618", "Green tea 500ml", 29),
    ("0049000028911", "Cola 1.25L", 55), ("4710063021234", "Instant noodles 5pk", 149),
    ("4710321000458", "Mango dried 200g", 220), ("0038000138416", "Cereal 500g", 329),
)
STORES = ("TPE-001", "TPE-017", "KHH-003", "TYO-104", "OSA-022", "NYC-7", "SFO-2")
JOURNEYS = (
    ("j-cart-01", "Cart Abandoned"), ("j-browse-02", "Browse Abandoned"),
    ("j-repl-03", "Replenishment Reminder"), ("j-wb-04", "Welcome Back"),
    ("j-price-05", "Price Drop"),
)
ANNEX_ACTIONS = ("points_earned", "reward_unlocked", "tier_reached", "referral", "review",
                 "subscription_opt_in", "subscription_opt_out", "birthday_bonus")
AUDIENCES = (("seg-vip", "VIP customers"), ("seg-lapsed", "Lapsed 90 days"),
             ("seg-late-delivery", "Late delivery"), ("seg-line-unreachable", "LINE unreachable"))


@dataclass
class Customer:
    customer_id: str
    email: str
    phone: str
    line_uid: str
    wallet_id: str
    sessionm_user_id: str
    insider_uuid: str
    first_name: str
    last_name: str
    language: str


def _iso(when: datetime, tz: bool = True) -> str:
    text = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return text + "+00:00" if tz else text


def _phone(rng: random.Random, country: str) -> str:
    if country == "TW":
        digits = f"9{rng.randint(10, 89)}{rng.randint(0, 999999):06d}"
        return rng.choice([f"0{digits}", f"+886{digits}", f"0{digits[:3]}-{digits[3:6]}-{digits[6:]}"])
    if country == "JP":
        digits = f"{rng.choice(['90', '80', '70'])}{rng.randint(1000, 9999)}{rng.randint(0, 9999):04d}"
        return rng.choice([f"+81{digits}", f"+81 {digits[:2]}-{digits[2:6]}-{digits[6:]}"])
    area = rng.choice(["212", "415", "646", "312", "206"])
    return f"+1{area}{rng.randint(201, 989)}{rng.randint(1000, 9999)}"


def make_customer(rng: random.Random, index: int) -> Customer:
    country = rng.choices(["TW", "JP", "US"], weights=[6, 3, 2])[0]
    first = rng.choice(FIRST_NAMES)
    last = rng.choice(LAST_NAMES)
    domain = rng.choice(["gmail.com", "yahoo.com.tw", "example.jp", "outlook.com"])
    email = f"{first.lower().replace('-', '')}.{last.lower()}{index}@{domain}"
    if rng.random() < 0.2:
        email = f"  {email.title()} "  # messy case and spacing, normalized downstream
    return Customer(
        customer_id=f"C{100000 + index}",
        email=email,
        phone=_phone(rng, country),
        line_uid="U" + uuid.UUID(int=rng.getrandbits(128)).hex,
        wallet_id=str(150000000 + index * 7),
        sessionm_user_id=str(uuid.UUID(int=rng.getrandbits(128))),
        insider_uuid=str(uuid.UUID(int=rng.getrandbits(128))),
        first_name=first,
        last_name=last,
        language={"TW": "zh-TW", "JP": "ja-JP", "US": "en-US"}[country],
    )


# --- AIR builders -----------------------------------------------------------------------------


def _deep_merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def _uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _identity(rng, wallet_id, kind, value, when) -> dict:
    masked = value[:2] + "*" * max(len(value) - 4, 1) + value[-2:]
    return {"identityId": str(rng.randint(10 ** 8, 10 ** 9)), "walletId": wallet_id,
            "type": kind, "value": value, "safeValue": masked,
            "dates": {"start": when, "end": None}, "state": "DEFAULT", "status": "ACTIVE"}


def _balances(current: int, lifetime: int | None = None) -> dict:
    return {"current": current, "usable": current, "locked": 0, "lifetime": lifetime or current,
            "pending": 0}


def _account(rng, wallet_id, kind, client_type, when, balance=0, campaign_id=None,
             status="ACTIVE", **extra) -> dict:
    account = {"accountId": str(rng.randint(10 ** 9, 10 ** 10)), "walletId": wallet_id,
               "campaignId": campaign_id or str(rng.randint(100000, 999999)), "type": kind,
               "clientType": client_type, "status": status, "state": "LOADED",
               "dates": {"start": when, "end": "2027-12-31T23:59:59+00:00"},
               "balances": _balances(balance) if kind == "POINTS" else
               {"available": 1, "refundable": 0}, "relationships": {}}
    account.update(extra)
    return account


def _account_txn(rng, account, event, value, when) -> dict:
    before = account["balances"].get("current", 0)
    after = before + value if event in ("EARN", "CREDIT", "REFUND") else before - value
    if account["type"] != "POINTS":
        before, after = 1, 0 if event == "REDEEM" else 1
    return {"accountTransactionId": str(rng.randint(10 ** 9, 10 ** 10)),
            "accountId": account["accountId"], "account": account, "event": event,
            "value": value, "source": "POS", "balancesBefore": _balances(before)
            if account["type"] == "POINTS" else {"available": before},
            "balancesAfter": _balances(after) if account["type"] == "POINTS"
            else {"available": after}, "dateCreated": when}


def _op(kind: str, operation: str, value: dict) -> dict:
    return {"objectType": kind, "operationType": operation, "objectValue": value}


def _basket(rng, lines: list[dict] | None, currency: str) -> tuple[dict, int]:
    if lines is None:
        lines = []
        for _ in range(rng.randint(1, 8)):
            upc, name, price = rng.choice(PRODUCTS)
            lines.append({"upc": upc, "description": name, "itemUnitCost": price,
                          "itemUnitCount": rng.randint(1, 4)})
    contents = []
    total = 0
    for line in lines:
        qty = line.get("itemUnitCount", 1)
        cost = line.get("itemUnitCost", 0)
        item = {"upc": line.get("upc"), "itemUnitCost": cost, "itemUnitMetric": "EACH",
                "itemUnitCount": qty, "totalUnitCost": cost * qty,
                "totalUnitCostAfterDiscount": cost * qty,
                "description": line.get("description")}
        item.update({k: v for k, v in line.items() if k not in item})
        total += cost * qty
        contents.append(item)
    basket = {"type": "STANDARD", "summary": {
        "totalBasketValue": total, "totalDiscountAmount": {"general": 0, "staff": None,
                                                           "promotions": 0},
        "totalItems": sum(c["itemUnitCount"] for c in contents), "currency": currency,
        "results": {"points": {"earn": total // 10, "spend": 0, "refund": 0}}},
        "contents": contents}
    return basket, total


def realistic_air(event_name: str, **overrides: Any) -> dict:
    """One AIR outbound document for `event_name`, shaped like AIR's own.

    Knobs: seed, wallet_id, customer_id, email, phone, event_id, event_date (str or datetime),
    tier_before, tier_after, points_balance, lines (basket lines as AIR contents), store_id,
    reference, first_name, last_name, language, marketing_optin, currency, action_reference.
    Any other keyword is deep-merged into the document (e.g. `headers={...}`).
    """
    rng = random.Random(overrides.pop("seed", event_name))
    wallet_id = str(overrides.pop("wallet_id", rng.randint(10 ** 8, 10 ** 9)))
    customer_id = overrides.pop("customer_id", f"C{rng.randint(100000, 999999)}")
    email = overrides.pop("email", f"member{rng.randint(1, 99999)}@example.com")
    phone = overrides.pop("phone", f"09{rng.randint(10, 89)}{rng.randint(0, 999999):06d}")
    event_id = overrides.pop("event_id", _uid(rng))
    event_date = overrides.pop("event_date", BASE_TIME + timedelta(seconds=rng.randint(0, 86400)))
    when = event_date if isinstance(event_date, str) else _iso(event_date, tz=False)
    when_tz = when if isinstance(event_date, str) else _iso(event_date)
    tier_before = str(overrides.pop("tier_before", "1001"))
    tier_after = str(overrides.pop("tier_after", "1002"))
    points_balance = int(overrides.pop("points_balance", rng.randint(100, 9000)))
    lines = overrides.pop("lines", None)
    store_id = overrides.pop("store_id", rng.choice(STORES))
    reference = overrides.pop("reference", f"POS-{rng.randint(10 ** 7, 10 ** 8)}")
    first_name = overrides.pop("first_name", rng.choice(FIRST_NAMES))
    last_name = overrides.pop("last_name", rng.choice(LAST_NAMES))
    language = overrides.pop("language", "zh-TW")
    optin = overrides.pop("marketing_optin", True)
    currency = overrides.pop("currency", "TWD")
    action_reference = overrides.pop("action_reference", "entered audience: late delivery")

    api = "7.6" if event_name.startswith("POSCONNECT") else "2.0"
    headers = {"eventName": event_name, "eventDate": when, "eesEventId": event_id,
               "eesMasterEventId": _uid(rng), "unitId": UNIT_ID,
               "unitFriendlyName": "Loyalty Relay Demo Market", "clientId": CLIENT_ID,
               "eesApiVersion": api, "externalMessageId": None, "callerIp": "10.1.2.3",
               "eesEnvironmentType": "PROD", "eesSubsystemId": "wallet"}
    ids = [_identity(rng, wallet_id, "CUSTOMER_ID", customer_id, when_tz),
           _identity(rng, wallet_id, "EMAIL", email, when_tz)]
    if rng.random() < 0.7:
        ids.append(_identity(rng, wallet_id, "MOBILE", phone, when_tz))
    points = _account(rng, wallet_id, "POINTS", "RETAILPOINTS", when_tz, points_balance,
                      campaign_id="100001")
    wallet = {"walletId": wallet_id, "friendlyName": f"{first_name} {last_name}",
              "type": "CONSUMER", "status": "ACTIVE", "state": "DEFAULT", "meta": {},
              "dateCreated": when_tz, "lastUpdated": when_tz, "relationships": {}}
    consumer = {"consumerId": str(rng.randint(10 ** 7, 10 ** 8)), "walletId": wallet_id,
                "friendlyName": first_name, "data": {
                    "personal": {"firstName": first_name, "lastName": last_name,
                                 "birthDate": f"19{rng.randint(60, 99)}-0{rng.randint(1, 9)}-1"
                                 f"{rng.randint(0, 9)}", "language": language, "gender": None},
                    "contact": [{"type": "email", "value": email},
                                {"type": "phone", "value": phone}],
                    "communication": [{"optin": {"marketing": optin, "sms": optin,
                                                 "email": True}}],
                    "address": {"city": "Taipei", "country": "TW"}},
                "dateCreated": when_tz, "lastUpdated": when_tz}
    tier = {"tierMembershipId": str(rng.randint(10 ** 6, 10 ** 7)), "walletId": wallet_id,
            "tierId": tier_after, "status": "ACTIVE",
            "balances": {"points": rng.randint(0, 5000), "spend": rng.randint(0, 200000),
                         "transactions": rng.randint(0, 80)},
            "expiryDate": "2027-12-31T23:59:59", "dateCreated": when_tz, "lastUpdated": when_tz}
    resource = f"/wallet/{wallet_id}"
    method = "POST"
    request_body: Any = None
    response_body: Any = None
    code = 200
    ops: list[dict] = []

    def pos(kind: str, status: str, *, earn: bool = True, redeem: bool = False) -> None:
        nonlocal resource, request_body, response_body
        basket, total = _basket(rng, lines, currency)
        txn = {"walletTransactionId": str(rng.randint(10 ** 9, 10 ** 10)), "walletId": wallet_id,
               "reference": reference, "type": kind, "status": status, "state": "ORIGINAL",
               "meta": {}, "channel": "STORE", "currency": currency,
               "location": {"storeId": store_id, "storeParentId": store_id.split("-")[0]},
               "basket": basket, "value": total, "dateCreated": when_tz,
               "lastUpdated": when_tz}
        ops.append(_op("walletTransactionEntity", "CREATE" if kind == "OPEN" else "UPDATE", txn))
        if earn:
            ops.append(_op("walletAccountTransactionEntity", "CREATE",
                           _account_txn(rng, points, "EARN", max(total // 10, 1), when_tz)))
        if redeem:
            coupon = _account(rng, wallet_id, "ECOUPON", "OFFER", when_tz)
            ops.append(_op("walletAccountTransactionEntity", "CREATE",
                           _account_txn(rng, coupon, "REDEEM", 1, when_tz)))
        resource = "/connect/wallet/" + kind.lower()
        request_body = orjson.dumps({"reference": reference, "identity": {"identityValue":
                                     customer_id}, "location": {"incomingIdentifier": store_id}}).decode()
        response_body = orjson.dumps({"walletTransactionId": txn["walletTransactionId"],
                                      "status": status}).decode()

    if event_name == "SERVICE.WALLET.CREATE":
        ops = [_op("walletEntity", "CREATE", wallet)] + [
            _op("walletIdentityEntity", "CREATE", i) for i in ids]
        resource, code = "/services/wallet", 201
        request_body = orjson.dumps({"identities": [{"type": i["type"], "value": i["value"]}
                                                    for i in ids]}).decode()
    elif event_name == "SERVICE.WALLET.ACCOUNTS.CREATE":
        coupon = _account(rng, wallet_id, "ECOUPON", "OFFER", when_tz)
        ops = ([_op("walletEntity", "CREATE", wallet)]
               + [_op("walletIdentityEntity", "CREATE", i) for i in ids]
               + [_op("walletConsumerEntity", "CREATE", consumer),
                  _op("walletAccountEntity", "CREATE", points),
                  _op("walletAccountEntity", "CREATE", coupon),
                  _op("tierMembershipEntity", "CREATE", tier)])
        resource, code = "/services/wallet/accounts", 201
        request_body = orjson.dumps({"identities": [{"type": i["type"], "value": i["value"]}
                                                    for i in ids],
                                     "accounts": [{"campaignId": "100001"}]}).decode()
        response_body = orjson.dumps({"walletId": wallet_id, "status": "ACTIVE"}).decode()
    elif event_name in ("WALLET.CONSUMER.CREATE", "WALLET.CONSUMER.UPDATE"):
        operation = event_name.rsplit(".", 1)[1]
        ops = [_op("walletConsumerEntity", operation, consumer)]
        resource = f"/wallet/{wallet_id}/consumer"
        method = "PATCH" if operation == "UPDATE" else "POST"
        request_body = {"data": consumer["data"]}
    elif event_name == "WALLET.ACCOUNT.CREATE.SCHEME":
        ops = [_op("walletAccountEntity", "CREATE", points),
               _op("tierMembershipEntity", "CREATE", tier)]
        resource, code = f"/wallet/{wallet_id}/scheme/100001", 201
    elif event_name == "WALLET.ACCOUNT.CREATE.CAMPAIGN":
        quest = _account(rng, wallet_id, "QUEST", "QUEST", when_tz)
        coupon = _account(rng, wallet_id, "ECOUPON", "OFFER", when_tz, relationships={
            "OBJECTIVE_OF": {"ACCOUNT": [quest["accountId"]]}})
        ops = [_op("walletAccountEntity", "CREATE", quest),
               _op("walletAccountEntity", "CREATE", coupon)]
        resource, code = f"/wallet/{wallet_id}/campaign/{coupon['campaignId']}", 201
    elif event_name == "WALLET.ACCOUNT.CREATE.PLAN":
        plan = _account(rng, wallet_id, "STANDARD_SUBSCRIPTION", "SUBSCRIPTION", when_tz)
        ents = [_account(rng, wallet_id, "ECOUPON", "ENTITLEMENT", when_tz) for _ in range(2)]
        ops = [_op("walletAccountEntity", "CREATE", a) for a in [plan, *ents]]
        resource, code = f"/wallet/{wallet_id}/plan/{plan['campaignId']}", 201
    elif event_name == "WALLET.ACCOUNT.UPDATE":
        plan = _account(rng, wallet_id, "STANDARD_SUBSCRIPTION", "SUBSCRIPTION", when_tz,
                        status="CANCELLED")
        ops = [_op("walletAccountEntity", "UPDATE", plan),
               _op("walletAccountTransactionEntity", "CREATE",
                   _account_txn(rng, plan, "CANCEL", 0, when_tz))]
        resource, method = f"/wallet/{wallet_id}/account/{plan['accountId']}/cancel", "PATCH"
    elif event_name == "SERVICE.WALLET.DELETE":
        cancelled = dict(points, status="CANCELLED")
        ops = ([_op("walletAccountEntity", "UPDATE", cancelled),
                _op("walletAccountTransactionEntity", "CREATE",
                    _account_txn(rng, cancelled, "CANCEL", 0, when_tz))]
               + [_op("walletIdentityEntity", "DELETE", i) for i in ids]
               + [_op("walletConsumerEntity", "DELETE", consumer),
                  _op("walletEntity", "DELETE", wallet)])
        resource, method, code = f"/services/wallet/{wallet_id}", "DELETE", 204
    elif event_name == "POSCONNECT.WALLET.OPEN":
        pos("OPEN", "OPEN", earn=False)
    elif event_name == "POSCONNECT.WALLET.SETTLE":
        pos("SETTLE", "SETTLED", redeem=rng.random() < 0.3)
    elif event_name == "POSCONNECT.WALLET.FULFIL":
        pos("FULFIL", "FULFILLED")
    elif event_name == "POSCONNECT.WALLET.REFUND":
        pos("REFUND", "REFUNDED", earn=False)
        ops.append(_op("walletAccountTransactionEntity", "CREATE",
                       _account_txn(rng, points, "REFUND_DEBIT", rng.randint(5, 50), when_tz)))
    elif event_name in ("POSCONNECT.WALLET.SPEND", "POSCONNECT.WALLET.SPEND.VOID"):
        event = "LOCK" if event_name.endswith("SPEND") else "VOID"
        ops = [_op("walletAccountTransactionEntity", "CREATE",
                   _account_txn(rng, points, event, rng.randint(50, 500), when_tz))]
        resource = "/connect/wallet/spend" + ("/void" if event == "VOID" else "")
        request_body = orjson.dumps({"reference": reference, "identity": {
            "identityValue": customer_id}}).decode()
    elif event_name == "SERVICE.TRIGGER":
        action = _account(rng, wallet_id, "BEHAVIOURAL_ACTION", "BEHAVIOURAL_ACTION", when_tz)
        ops = [_op("walletAccountEntity", "CREATE", action),
               _op("walletAccountTransactionEntity", "CREATE",
                   _account_txn(rng, action, "REDEEM", 1, when_tz)),
               _op("walletAccountTransactionEntity", "CREATE",
                   _account_txn(rng, points, "CREDIT", 200, when_tz))]
        resource = "/services/trigger"
        request_body = orjson.dumps({"identityValue": customer_id,
                                     "triggers": [{"reference": action_reference}],
                                     "walletTransaction": {"reference": reference}}).decode()
    elif event_name.startswith("TIER.MEMBERSHIP."):
        verb = event_name.rsplit(".", 1)[1]
        up = (int(tier_after) > int(tier_before)) if (tier_after.isdigit()
                                                       and tier_before.isdigit()) else True
        txn_type = {"MOVE": "UPGRADE" if up else "DOWNGRADE"}.get(verb, verb)
        tier_txn = {"tierMembershipTransactionId": str(rng.randint(10 ** 6, 10 ** 7)),
                    "tierMembershipId": tier["tierMembershipId"], "transactionType": txn_type,
                    "tierId": tier_before if verb in ("MOVE", "ADJUST") else tier_after,
                    "tierIdAfter": tier_after, "value": rng.randint(10, 500),
                    "source": "SCHEDULED", "dateCreated": when_tz}
        ops = [_op("tierMembershipEntity", "CREATE" if verb == "CREATE" else "UPDATE", tier)]
        if verb != "CREATE":
            ops.append(_op("tierMembershipTransactionEntity", "CREATE", tier_txn))
        resource, method = f"/wallet/{wallet_id}/tier/{tier['tierMembershipId']}", "PATCH"
    elif event_name == "WALLET.ACCOUNT.TRANSACTION.REDEEM":
        coupon = _account(rng, wallet_id, "ECOUPON", "OFFER", when_tz)
        ops = [_op("walletAccountTransactionEntity", "CREATE",
                   _account_txn(rng, coupon, "REDEEM", 1, when_tz)),
               _op("walletAccountEntity", "UPDATE", dict(coupon, state="REDEEMED"))]
        resource = f"/wallet/{wallet_id}/account/{coupon['accountId']}/redeem"
    else:
        ops = [_op("walletEntity", "READ", wallet)]

    doc = {
        "headers": headers,
        "request": {"resource": resource, "method": method, "body": request_body,
                    "contentType": "application/json",
                    "customHeaders": {"X-EES-CALLER-VERSION": "relay-demo"}},
        "response": {"code": code, "body": response_body, "contentType": "application/json"},
        "atomicOperations": ops,
        "enrichmentData": {f"walletEntity_{wallet_id}": {"identities": copy.deepcopy(ids)}},
    }
    return _deep_merge(doc, overrides)


# --- our own ingress topics -------------------------------------------------------------------


def _journey(rng, c: Customer, when: datetime) -> dict:
    jid, name = rng.choice(JOURNEYS)
    upc, product, price = rng.choice(PRODUCTS)
    variables = {"first_name": c.first_name, "product_name": product, "price": str(price),
                 "image_url": f"https://cdn.example.com/products/{upc}.jpg",
                 "cart_url": f"https://shop.example.com/cart?c={c.customer_id}"}
    record: dict[str, Any] = {
        "trigger_id": _uid(rng), "journey": {"id": jid, "name": name},
        "step": {"id": f"step-{rng.randint(1, 5)}", "name": "LINE push"},
        "customer": {"customer_id": c.customer_id, "line_uid": c.line_uid,
                     "insider_uuid": c.insider_uuid},
        "maac": {"template_id": rng.randint(1000, 1099), "event_id": rng.randint(500, 520)},
        "variables": variables, "occurred_at": _iso(when),
    }
    if rng.random() < 0.3:  # camelCase producer, flat customer fields
        record = {"triggerId": record["trigger_id"], "journeyName": name, "journeyId": jid,
                  "customerId": c.customer_id, "lineUid": c.line_uid, "email": c.email,
                  "maac": {"templateId": record["maac"]["template_id"],
                           "eventName": f"{jid}-push"},
                  "variables": variables, "occurredAt": record["occurred_at"]}
    return record


def _annex(rng, c: Customer, when: datetime) -> dict:
    action = rng.choice(ANNEX_ACTIONS)
    record: dict[str, Any] = {
        "action_id": f"ax-{rng.randint(10 ** 8, 10 ** 9)}", "action_type": action,
        "member": {"member_id": f"M{c.customer_id[1:]}", "email": c.email, "phone": c.phone,
                   "first_name": c.first_name, "last_name": c.last_name},
        "occurred_at": _iso(when), "channel": rng.choice(["sms", "email", "web"]),
    }
    if action in ("points_earned", "birthday_bonus", "referral", "review"):
        record["points"] = rng.choice([50, 100, 200, 500])
        record["points_balance"] = rng.randint(100, 9000)
    if action == "reward_unlocked":
        record["reward"] = {"reward_id": f"rw-{rng.randint(1, 99)}", "name": "NT$100 voucher",
                            "expires_at": _iso(when + timedelta(days=30))}
    if action == "tier_reached":
        record["tier"] = rng.choice(["silver", "gold", "platinum"])
    return record


def _audience(rng, c: Customer, when: datetime) -> dict:
    aid, name = rng.choice(AUDIENCES)
    platform = rng.choice(["braze", "insider"])
    customer = ({"external_id": c.customer_id, "email": c.email} if platform == "braze"
                else {"uuid": c.insider_uuid, "customer_id": c.customer_id, "phone": c.phone})
    return {"membership_id": _uid(rng), "platform": platform,
            "audience": {"id": aid, "name": name},
            "action": rng.choice(["entered", "entered", "exited", "added", "removed"]),
            "customer": customer, "occurred_at": _iso(when)}


def _identity_update(rng, c: Customer, when: datetime) -> dict:
    identifiers = {"customer_id": c.customer_id, "email": c.email, "phone": c.phone}
    if rng.random() < 0.6:
        identifiers["line_uid"] = c.line_uid
    if rng.random() < 0.4:
        identifiers["sessionm_user_id"] = c.sessionm_user_id
    if rng.random() < 0.4:
        identifiers["braze_external_id"] = c.customer_id
    return {"update_id": _uid(rng), "source": rng.choice(["salesforce", "shopify", "pos-crm"]),
            "identifiers": identifiers,
            "attributes": {"first_name": c.first_name, "last_name": c.last_name,
                           "language": c.language, "city": rng.choice(["Taipei", "Tokyo",
                                                                      "New York"])},
            "consents": {"email": rng.random() < 0.8, "sms": rng.random() < 0.5},
            "updated_at": _iso(when)}


def _sessionm(rng, c: Customer, when: datetime) -> dict:
    kind = rng.choice(["offer_issued", "offer_issued", "points_awarded", "campaign_message"])
    record: dict[str, Any] = {
        "message_id": _uid(rng), "kind": kind, "broadcast": False,
        "customer": {"user_id": c.sessionm_user_id, "external_id": c.customer_id,
                     "email": c.email},
        "campaign": {"runtime": "2026-11", "id": f"sm-camp-{rng.randint(1, 40)}",
                     "name": "Holiday offers", "custom_data": {"segment": "vip"}},
        "occurred_at": _iso(when),
    }
    # The Braze campaign or canvas the message triggers: one of the few a marketing team runs.
    # Until 2026-12-05 each message named a new one (a uuid), which no SessionM set-up does and
    # which left nothing for the sink to batch (Braze takes 50 recipients per trigger call).
    if rng.random() < 0.6:
        record["campaign_id"] = rng.choice(BRAZE_CAMPAIGNS)
    else:
        record["canvas_id"] = rng.choice(BRAZE_CANVASES)
    if kind == "offer_issued":
        record["offer"] = {"offer_id": f"of-{rng.randint(1, 500)}", "title": "15% off tea",
                           "user_offer_id": _uid(rng), "description": "15% off any tea",
                           "terms": "One use per customer.",
                           "logo_url": "https://cdn.example.com/offers/tea.png",
                           "pos_discount_id": f"D{rng.randint(100, 999)}",
                           "expiration_date": _iso(when + timedelta(days=14))}
    elif kind == "points_awarded":
        record["points"] = {"amount": rng.choice([100, 250, 500]), "account_name": "default"}
    return record


def _maac(rng, c: Customer, when: datetime) -> dict:
    if rng.random() < 0.8:
        return {"timestamp": int(when.timestamp()), "topic": "message.first_open",
                "idempotency_key": _uid(rng),
                "data": {"message_type": "openapi", "message_id": rng.randint(500, 520),
                         "line_uid": c.line_uid, "customer_id": c.customer_id}}
    if rng.random() < 0.5:
        return {"timestamp": int(when.timestamp()), "topic": "line.bound",
                "data": {"line_uid": c.line_uid, "customer_id": c.customer_id}}
    start = when.replace(minute=0, second=0)
    return {"timestamp": int(when.timestamp()), "topic": "report.clicks",
            "data": {"event_id": rng.randint(500, 520), "opens": rng.randint(10, 500),
                     "clicks": rng.randint(0, 100), "unique_clicks": rng.randint(0, 80),
                     "window_start": _iso(start - timedelta(hours=1)),
                     "window_end": _iso(start)}}


def _air(rng, c: Customer, when: datetime) -> tuple[dict, str]:
    names = list(AIR_WEIGHTS) + [n for n in AIR_EVENT_NAMES if n not in AIR_WEIGHTS]
    weights = [AIR_WEIGHTS.get(n, 1) for n in names]
    name = rng.choices(names, weights=weights)[0]
    tier_before = rng.choice(["1001", "1002", "1003"])
    tier_after = str(int(tier_before) + rng.choice([1, 1, -1]))
    doc = realistic_air(name, seed=rng.getrandbits(32), wallet_id=c.wallet_id,
                        customer_id=c.customer_id, email=c.email.strip().lower(),
                        phone=c.phone, event_date=when, tier_before=tier_before,
                        tier_after=tier_after, first_name=c.first_name,
                        last_name=c.last_name, language=c.language)
    return doc, name


INVALID_KINDS = ("not_json", "json_array", "air_no_headers", "journey_no_id", "maac_topic",
                 "annex_bad_phone", "truncated")


def _invalid(rng, c: Customer, when: datetime) -> tuple[str, bytes]:
    kind = rng.choice(INVALID_KINDS)
    if kind == "not_json":
        return rng.choice(INGRESS_TOPICS), b"<html>502 Bad Gateway</html>"
    if kind == "json_array":
        return "identity.updates", b'[{"update_id": "x"}]'
    if kind == "air_no_headers":
        doc = realistic_air("POSCONNECT.WALLET.SETTLE", seed=rng.getrandbits(32))
        del doc["headers"]
        return "air.outbound", orjson.dumps(doc)
    if kind == "journey_no_id":
        record = _journey(rng, c, when)
        record.pop("trigger_id", None)
        record.pop("triggerId", None)
        return "journey.triggers", orjson.dumps(record)
    if kind == "maac_topic":
        return "maac.results", orjson.dumps({"timestamp": int(when.timestamp()),
                                             "topic": "message.delivered",
                                             "data": {"line_uid": c.line_uid}})
    if kind == "annex_bad_phone":
        return "loyalty.actions", orjson.dumps({
            "action_id": f"ax-{rng.randint(1, 10 ** 6)}", "action_type": "subscription_opt_in",
            "member": {"member_id": "M1", "phone": "12345"}, "occurred_at": _iso(when)})
    raw = orjson.dumps(_sessionm(rng, c, when))
    return "sessionm.messages", raw[: len(raw) // 2]


_BUILDERS = {
    "journey.triggers": _journey, "loyalty.actions": _annex, "audience.membership": _audience,
    "identity.updates": _identity_update, "sessionm.messages": _sessionm, "maac.results": _maac,
}


def labeled_sample_records(n: int, seed: int = 0, invalid_share: float = 0.02,
                           base_time: datetime | None = None,
                           members: Sequence[Customer] | None = None, new_share: float = 0.0
                           ) -> list[tuple[str, bytes | None, bytes, bool]]:
    """Like `sample_records`, with a fourth field: False for the deliberately invalid ones.

    `members`: the customers events come from (default: made up for this seed), and
    `new_share` of the events from customers seen nowhere else (sign-ups)."""
    rng = random.Random(seed)
    base = base_time or BASE_TIME
    customers = members or [make_customer(rng, i) for i in range(max(8, min(n // 4, 5000)))]
    topics = list(TOPIC_WEIGHTS)
    weights = [TOPIC_WEIGHTS[t] for t in topics]
    records: list[tuple[str, bytes | None, bytes, bool]] = []
    for index in range(n):
        if new_share and rng.random() < new_share:
            c = make_customer(rng, NEW_CUSTOMER_BASE + rng.randrange(10**9))
        else:
            c = customers[int(rng.paretovariate(1.2) * 7) % len(customers)]
        when = base + timedelta(seconds=index * 3 + rng.randint(0, 2))
        if rng.random() < invalid_share:
            topic, value = _invalid(rng, c, when)
            records.append((topic, c.customer_id.encode(), value, False))
            continue
        topic = rng.choices(topics, weights=weights)[0]
        if topic == "air.outbound":
            doc, _ = _air(rng, c, when)
        else:
            doc = _BUILDERS[topic](rng, c, when)
        key = c.customer_id.encode() if rng.random() < 0.95 else None
        records.append((topic, key, orjson.dumps(doc), True))
    return records


def sample_records(n: int, seed: int = 0, invalid_share: float = 0.02,
                   base_time: datetime | None = None, members: Sequence[Customer] | None = None,
                   new_share: float = 0.0) -> list[tuple[str, bytes | None, bytes]]:
    """n deterministic `(topic, key, value)` records across all seven ingress topics.

    `base_time` (default: a fixed instant, for determinism) is when the first event occurred;
    events are about 3 s apart. Pass `datetime.now(timezone.utc)` for live demos."""
    return [(t, k, v) for t, k, v, _ in labeled_sample_records(n, seed, invalid_share,
                                                               base_time, members, new_share)]
