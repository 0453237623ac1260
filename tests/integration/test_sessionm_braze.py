"""Flow 5 through a real worker and the sandbox: Braze segments -> SessionM tags (TTL from
topics/segments.yaml), SessionM messages -> Braze campaign/canvas triggers (recipients batched
up to 50 per call, broadcasts alone) with the live offer wallet, and the wallet with SessionM down."""

import asyncio
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from app.accounting import outcomes_in
from app.localstack import produce, read_topic
from app.sandbox.core import fraction
from app.sandbox.sessionm import offers_for
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration


def read_all(bootstrap, topic: str, idle_s: float = 1.0) -> list:
    async def collect():
        return [v async for _, v in read_topic(bootstrap, [topic], idle_timeout_s=idle_s)]
    return asyncio.run(collect())


def outcomes(bootstrap, destination: str, status: str | None = None) -> list[dict]:
    return [o for record in read_all(bootstrap, "relay.outcomes") for o in outcomes_in(record)
            if o.get("stage") == "deliver" and o.get("destination") == destination
            and (status is None or o.get("status") == status)]


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


@pytest.fixture(scope="module")
def worker(start_worker):
    return start_worker(SINK_BATCH_WINDOW_S="0.5", RETRY_BASE_S="0.05", WALLET_TIMEOUT_S="1")


def membership(customer: str, segment: str, action: str) -> tuple[str, bytes, bytes]:
    doc = {"membership_id": str(uuid.uuid4()), "platform": "braze",
           "audience": {"id": segment}, "action": action,
           "customer": {"external_id": customer}, "occurred_at": now_iso()}
    return "audience.membership", customer.encode(), orjson.dumps(doc)


def message(customer: str | None, **fields) -> tuple[str, bytes | None, bytes]:
    doc = {"message_id": str(uuid.uuid4()), "kind": "offer_issued", "broadcast": False,
           "occurred_at": now_iso(),
           "offer": {"offer_id": "of-7", "title": "15% off tea", "user_offer_id": "uo-7",
                     "expiration_date": "2099-01-01T00:00:00Z"},
           "campaign": {"name": "Holiday", "custom_data": {"segment": "vip"}}, **fields}
    if customer:
        doc["customer"] = {"user_id": f"sm-{customer}", "external_id": customer,
                           "email": f"{customer.lower()}@example.com"}
    return "sessionm.messages", customer.encode() if customer else None, orjson.dumps(doc)


def recipients(sandbox, target_field: str, target: str) -> list[tuple[dict, dict]]:
    """(call body, recipient) for every accepted trigger call to `target`."""
    out = []
    for call in sandbox.calls("braze"):
        body = call.get("body") or {}
        if body.get(target_field) == target:
            out += [(body, r) for r in body.get("recipients") or []]
    return out


def test_segment_tag_with_ttl(broker, sandbox, worker):
    tagged, counter, left, unknown = (f"C-{uuid.uuid4().hex[:8]}" for _ in range(4))
    asyncio.run(produce(broker.bootstrap, [
        membership(tagged, "seg-vip", "entered"),          # tag braze_vip, ttl 30 days
        membership(counter, "seg-newsletter", "entered"),  # no TTL: a counter tag
        membership(left, "seg-vip", "exited"),             # leaving removes nothing
        membership(unknown, "seg-not-configured", "entered"),
    ]))
    sessionm = sandbox.sandbox.emulator("sessionm")
    wait_until(lambda: sessionm.user_tags(tagged, external=True)
               and sessionm.user_tags(counter, external=True), 60, what="SessionM tags")
    calls = {c["path"].split("/users/")[1].split("/")[0]: c["body"]
             for c in sandbox.calls("sessionm") if "/external/users/" in c["path"]}
    assert calls[tagged] == {"tags": ["braze_vip"], "ttl": 2592000}
    assert calls[counter] == {"tags": ["braze_newsletter"]}
    entry = sessionm.tags[("external", tagged)]["braze_vip"]
    assert entry["expires_at"] - datetime.now(UTC).timestamp() == pytest.approx(2592000, abs=120)
    skipped = wait_until(lambda: {o["reason"] for o in outcomes(broker.bootstrap, "sessionm",
                                                                "skipped")} or None, 30)
    assert skipped == {"exit_keeps_tag", "segment_not_configured"}
    assert left not in calls and unknown not in calls


def test_broadcast_vs_recipients_with_wallet(broker, sandbox, worker):
    campaign = f"camp-{uuid.uuid4().hex[:6]}"
    canvas = f"canvas-{uuid.uuid4().hex[:6]}"
    customers = [f"C-{uuid.uuid4().hex[:8]}" for _ in range(60)]
    records = [message(c, campaign_id=campaign) for c in customers]
    records.append(message(None, canvas_id=canvas, broadcast=True, kind="campaign_message"))
    asyncio.run(produce(broker.bootstrap, records))

    got = wait_until(lambda: (r := recipients(sandbox, "campaign_id", campaign))
                     and len(r) >= 60 and r, 60, what="60 campaign recipients")
    bodies = {id(body): body for body, _ in got}.values()
    assert sorted(r["external_user_id"] for _, r in got) == sorted(customers)
    assert all(len(b["recipients"]) <= 50 and "broadcast" not in b for b in bodies)
    assert max(len(b["recipients"]) for b in bodies) > 1  # batched per campaign, not one by one

    _, first = got[0]
    props = first["trigger_properties"]
    user = "sm-" + first["external_user_id"]
    assert props["offer_id"] == "of-7" and props["campaign_name"] == "Holiday"
    assert props["campaign_custom_data"] == {"segment": "vip"}
    assert props["wallet_status"] == "live"
    assert props["wallet_offer_count"] == len(offers_for(user))
    assert [o["offer_id"] for o in props["wallet_offers"]] == [o["offer_id"]
                                                               for o in offers_for(user)]
    total = int(fraction("points", user) * 5000)
    assert props["wallet_total_points"] == total

    broadcast = wait_until(lambda: [c["body"] for c in sandbox.calls("braze")
                                    if (c["body"] or {}).get("canvas_id") == canvas], 30,
                           what="broadcast call")
    assert len(broadcast) == 1
    assert broadcast[0]["broadcast"] is True and "recipients" not in broadcast[0]
    assert broadcast[0]["canvas_entry_properties"]["message_kind"] == "campaign_message"


def test_wallet_with_sessionm_down_sends_without_wallet(broker, sandbox, worker):
    sandbox.faults(destination="sessionm", error_rate=1.0, statuses=[503])
    try:
        campaign, customer = f"camp-{uuid.uuid4().hex[:6]}", f"C-{uuid.uuid4().hex[:8]}"
        asyncio.run(produce(broker.bootstrap, [message(customer, campaign_id=campaign)]))
        got = wait_until(lambda: recipients(sandbox, "campaign_id", campaign), 60,
                         what="trigger without wallet")
        failed_lookups = sandbox.sandbox.stats()["sessionm"]["requests"].get("503", 0)
    finally:
        sandbox.clear_faults()
    (_, recipient), = got
    props = recipient["trigger_properties"]
    assert recipient["external_user_id"] == customer
    assert props["wallet_status"] == "unavailable" and "wallet_offers" not in props
    assert props["offer_id"] == "of-7"  # the message itself still goes out
    assert failed_lookups >= 1  # the wallet was asked for and SessionM answered 503
