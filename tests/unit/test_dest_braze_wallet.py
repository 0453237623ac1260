"""Offer-wallet enrichment of Braze trigger sends (`with_wallet`)."""

import asyncio

import pytest

from app.config import DestinationConfig
from app.destinations.base import Reply
from app.destinations.braze import DESTINATION
from app.destinations.braze import wallet as wallets

BRAZE = DestinationConfig("http://braze.test", "key")
SM = DestinationConfig("http://sm.test/core", "secret", {
    "api_key": "KEY", "connect_url": "http://sm.test/connect", "offers_auth": "b2Zm",
    "retailer_id": "R-1"})
CAMPAIGN = DESTINATION.actions["campaign_trigger"]
CANVAS = DESTINATION.actions["canvas_trigger"]
WALLET = {"user_id": "u", "user_offers": [
    {"offer_id": "o1", "user_offer_id": "uo1", "offer_type": "discount", "name": "Tea",
     "expiration_date": "2099-01-01T00:00:00Z", "secret_internal": "x"},
    {"offer_id": "o2", "expiration_date": "2000-01-01T00:00:00Z"}],
    "available_points": 700, "total_points": 900}


class FakeSessionM:
    def __init__(self, status=200, delay=0.0):
        self.status, self.delay, self.calls, self.active, self.peak = status, delay, [], 0, 0

    async def send(self, req):
        self.calls.append(req)
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(self.delay)
        self.active -= 1
        if self.status != 200:
            return Reply(self.status, {}, {"status": "error"})
        return Reply(200, {}, {"status": "ok", "payload": {**WALLET,
                                                           "user_id": req.json["user_id"]}})


@pytest.fixture
def sessionm():
    fake = FakeSessionM()
    wallets.set_wallet_provider(wallets.WalletProvider(SM, fake.send, cache_s=30, concurrency=2))
    yield fake
    wallets.set_wallet_provider(None)


def delivery(customer, params, event_id="ev", ids=None):
    env = {"event_id": event_id, "type": "sessionm.offer_issued", "source": "sessionm",
           "occurred_at": "2026-11-22T10:00:00.000Z",
           "identities": ids or {"customer_id": customer, "sessionm_user_id": f"sm-{customer}"},
           "attributes": {}, "payload": {"campaign_id": "camp", "broadcast": False}, "trace": {}}
    return {"delivery_id": f"braze:campaign_trigger:{event_id}", "action": "campaign_trigger",
            "event_id": event_id, "params": {"campaign_id": "$.payload.campaign_id", **params},
            "envelope": env}


def braze_send(calls, status=201):
    async def send(req):
        calls.append(req)
        return Reply(status, {}, {"message": "success"})
    return send


def test_wallet_properties_drop_expired_and_unknown_keys():
    props = wallets.wallet_properties(WALLET)
    assert props["wallet_status"] == "live"
    assert props["wallet_offers"] == [{"offer_id": "o1", "user_offer_id": "uo1",
                                       "offer_type": "discount", "name": "Tea",
                                       "expiration_date": "2099-01-01T00:00:00Z"}]
    assert props["wallet_offer_count"] == 1
    assert props["wallet_available_points"] == 700 and props["wallet_total_points"] == 900
    assert wallets.wallet_properties(WALLET, max_offers=0)["wallet_offers"] == []


def test_prepare_needs_a_wallet_user_and_valid_fallback():
    from app.destinations.base import ItemInvalid

    with pytest.raises(ItemInvalid, match="with_wallet"):
        CAMPAIGN.prepare(delivery("C1", {"with_wallet": True},
                                  ids={"braze_external_id": "B1"}), BRAZE)
    with pytest.raises(ItemInvalid, match="wallet_fallback"):
        CAMPAIGN.prepare(delivery("C1", {"with_wallet": True, "wallet_fallback": "hope"}), BRAZE)
    broadcast = delivery("C1", {"with_wallet": True, "broadcast": True})
    assert "wallet" not in CAMPAIGN.prepare(broadcast, BRAZE)


async def test_enrichment_adds_wallet_to_each_recipient(sessionm):
    items = [CAMPAIGN.prepare(delivery(f"C{i}", {"with_wallet": True,
                                                 "properties": {"k": "v"}}, f"e{i}"), BRAZE)
             for i in range(3)]
    calls = []
    results = await CAMPAIGN.perform(braze_send(calls), items, BRAZE)
    assert [r.status for r in results] == ["delivered"] * 3
    (req,) = calls
    assert len(req.json["recipients"]) == 3
    props = req.json["recipients"][0]["trigger_properties"]
    assert props["k"] == "v" and props["wallet_available_points"] == 700
    assert [o["offer_id"] for o in props["wallet_offers"]] == ["o1"]
    offers_req = sessionm.calls[0]
    assert offers_req.path == "http://sm.test/connect/offers/api/2.0/offers/get_user_offers"
    assert offers_req.headers["Authorization"] == "Basic b2Zm"
    assert {c.json["user_id"] for c in sessionm.calls} == {"sm-C0", "sm-C1", "sm-C2"}


async def test_cache_and_bounded_concurrency():
    fake = FakeSessionM(delay=0.02)
    provider = wallets.WalletProvider(SM, fake.send, cache_s=30, concurrency=2)
    await asyncio.gather(*(provider.wallet(f"u{i % 4}") for i in range(12)))
    assert len(fake.calls) == 4  # one call per user: shared in flight, then cached
    assert fake.peak <= 2
    await provider.wallet("u1")
    assert len(fake.calls) == 4


async def test_cache_expires():
    now = [0.0]
    fake = FakeSessionM()
    provider = wallets.WalletProvider(SM, fake.send, cache_s=10, clock=lambda: now[0])
    await provider.wallet("u")
    now[0] = 11.0
    await provider.wallet("u")
    assert len(fake.calls) == 2


async def test_down_sessionm_send_fallback_sends_without_wallet():
    fake = FakeSessionM(status=503)
    wallets.set_wallet_provider(wallets.WalletProvider(SM, fake.send, fallback="send"))
    try:
        item = CAMPAIGN.prepare(delivery("C1", {"with_wallet": True}), BRAZE)
        calls = []
        (result,) = await CAMPAIGN.perform(braze_send(calls), [item], BRAZE)
    finally:
        wallets.set_wallet_provider(None)
    assert result.status == "delivered"
    assert calls[0].json["recipients"][0]["trigger_properties"] == {"wallet_status": "unavailable"}


async def test_down_sessionm_retry_fallback_holds_the_batch():
    fake = FakeSessionM(status=503)
    wallets.set_wallet_provider(wallets.WalletProvider(SM, fake.send, fallback="send"))
    try:
        items = [CAMPAIGN.prepare(delivery("C1", {"with_wallet": True,
                                                  "wallet_fallback": "retry"}, "e1"), BRAZE),
                 CAMPAIGN.prepare(delivery("C2", {}, "e2"), BRAZE)]
        calls = []
        results = await CAMPAIGN.perform(braze_send(calls), items, BRAZE)
    finally:
        wallets.set_wallet_provider(None)
    assert calls == []  # nothing sent: the request must carry every delivery of the batch
    assert [(r.status, r.reason) for r in results] == [
        ("retry", "wallet_http_503"), ("retry", "held_with_batch")]


async def test_fail_fast_after_repeated_failures():
    now = [0.0]
    fake = FakeSessionM(status=0)  # transport failure
    provider = wallets.WalletProvider(SM, fake.send, clock=lambda: now[0])
    for _ in range(wallets.FAIL_AFTER):
        with pytest.raises(wallets.WalletUnavailable):
            await provider.wallet("u")
    with pytest.raises(wallets.WalletUnavailable, match="failing_fast"):
        await provider.wallet("u")
    assert len(fake.calls) == wallets.FAIL_AFTER
    now[0] = wallets.FAIL_FAST_S + 1
    with pytest.raises(wallets.WalletUnavailable):
        await provider.wallet("u")
    assert len(fake.calls) == wallets.FAIL_AFTER + 1


async def test_canvas_wallet_too_large_keeps_counts(sessionm):
    big = {"p": "x" * (50 * 1024 - 200)}
    item = CANVAS.prepare({**delivery("C1", {"with_wallet": True, "properties": big}),
                           "action": "canvas_trigger",
                           "params": {"canvas_id": "cv", "with_wallet": True,
                                      "properties": big}}, BRAZE)
    calls = []
    (result,) = await CANVAS.perform(braze_send(calls), [item], BRAZE)
    props = calls[0].json["recipients"][0]["canvas_entry_properties"]
    assert result.status == "delivered"
    assert "wallet_offers" not in props and props["wallet_offer_count"] == 1
