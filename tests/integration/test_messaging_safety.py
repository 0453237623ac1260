"""Customer-safe messaging through a real worker, the embedded broker and the sandbox: a message
held in quiet hours is delivered when the customer's window opens (not before); an opted-out
customer gets nothing while an opted-in one is messaged; the fourth marketing message in a day is
suppressed and reported to Insider; a replay changes no count.

The worker's policy is the shipped topics/messaging.yaml with one change: the LINE and SMS quiet
hours are a window that covers "now" in Tokyo and ends 75 s after the module starts, while in
Taipei (the default zone) it is an hour earlier and outside the window. (The 02:00 -> 08:00 case
itself is a unit test: tests/unit/test_safety_decide.py.)"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest

from app.localstack import produce
from tests.integration.conftest import policy_file, wait_until
from tests.integration.test_line_feedback import (
    insider_events,
    maac_calls_for,
    send_triggers,
    topic_records,
    trigger,
    uid_for,
)

pytestmark = pytest.mark.integration

TOKYO = ZoneInfo("Asia/Tokyo")
# Room for a worker start, three profiles and the holds on a loaded 2-core CI machine, where
# the profiles alone once took more than 30 s.
QUIET_LEFT_S = 75


def update(identifiers: dict, attributes: dict | None = None, consents: dict | None = None
           ) -> tuple[str, bytes, bytes]:
    body = {"update_id": f"u-{uuid.uuid4()}", "source": "crm", "identifiers": identifiers,
            "attributes": attributes or {}, "updated_at": datetime.now(UTC).isoformat()}
    if consents is not None:
        body["consents"] = consents
    return "identity.updates", identifiers["customer_id"].encode(), orjson.dumps(body)


def japanese_mobile() -> str:
    """A valid 090 number: the digit after 90 is never 0 (a number like +81 90 0123 4567 is
    rejected, and the test once waited for a profile it could never have)."""
    return f"+8190{10**7 + uuid.uuid4().int % (9 * 10**7)}"


def journey_trigger(customer: str, uid: str, journey: str) -> dict:
    record = trigger(customer, 9001, uid)
    record["journey"] = {"id": journey, "name": journey}
    record["occurred_at"] = datetime.now(UTC).isoformat()
    return record


def admin_profile(worker, customer: str, kind: str = "customer_id") -> dict | None:
    r = httpx.get(f"{worker.url}/profiles/{kind}/{quote(customer)}", timeout=5,
                  headers={"Authorization": "Bearer adm1n"})
    return r.json() if r.status_code == 200 else None


@pytest.fixture(scope="module")
def quiet_end() -> float:
    return whole_second(time.time() + QUIET_LEFT_S)


def whole_second(t: float) -> float:
    """Policy times are written to the second: a window must end on one, or it ends up to a
    second before the time the test checks against."""
    return float(int(t))


def tokyo_night(tmp_path_factory, window_end: float, channels: tuple[str, ...]) -> str:
    """A policy whose quiet hours on `channels` began in Tokyo 5 minutes ago and end at
    `window_end`."""
    window = {"start": (datetime.now(TOKYO) - timedelta(minutes=5)).strftime("%H:%M:%S"),
              "end": datetime.fromtimestamp(window_end, TOKYO).strftime("%H:%M:%S")}

    def edit(doc: dict) -> None:
        for channel in channels:
            doc["channels"][channel]["quiet_hours"] = dict(window)

    return policy_file(tmp_path_factory, edit)


@pytest.fixture(scope="module")
def worker(start_worker, tmp_path_factory, quiet_end):
    return start_worker(MESSAGING_FILE=tokyo_night(tmp_path_factory, quiet_end, ("line", "sms")),
                        DEFER_TICK_S="1", ADMIN_TOKEN="adm1n")


def held_record(broker, customer: str) -> list[dict]:
    return topic_records(broker, "feedback.insider", lambda v: (
        v.get("type") == "message.deferred"
        and v.get("identities", {}).get("customer_id") == customer), quiet_s=1.0)


def texts_to(sandbox, phone: str) -> list[dict]:
    return [c for c in sandbox.calls("attentive") if c["endpoint"] == "text/send"
            and (c.get("body") or {}).get("user", {}).get("phone") == phone]


def test_messages_in_quiet_hours_are_delivered_when_the_window_opens(broker, sandbox, worker,
                                                                    quiet_end):
    """A LINE push and an SMS at night in Tokyo wait for the window's end; the same push in
    Taipei (an hour earlier there) goes at once."""
    tag = uuid.uuid4().hex[:8]
    tokyo, taipei, texter = f"JP-{tag}", f"TW-{tag}", f"SMS-{tag}"
    uid_jp, uid_tw = uid_for(9001, False), uid_for(9001, False)
    jp_phone = japanese_mobile()  # the zone is Tokyo
    sandbox.sandbox.emulator("attentive").subscribed[("TEXT", jp_phone)] = True
    asyncio.run(produce(broker.bootstrap, [
        update({"customer_id": tokyo, "line_uid": uid_jp}, {"country": "JP"}),
        update({"customer_id": taipei, "line_uid": uid_tw}, {"country": "TW"}),
        update({"customer_id": texter, "phone": jp_phone}, consents={"sms": True})]))
    # the phone's index entry too: the loyalty action finds the profile by its phone
    wait_until(lambda: admin_profile(worker, tokyo) and admin_profile(worker, taipei)
               and (admin_profile(worker, jp_phone, "phone") or {}).get("consent", {}).get("sms"),
               60, what="profiles")
    send_triggers(broker, [journey_trigger(tokyo, uid_jp, f"quiet-{tag}"),
                           journey_trigger(taipei, uid_tw, f"quiet-{tag}")])
    points = {"action_id": f"ax-{tag}", "action_type": "points_earned",
              "member": {"member_id": f"M-{tag}", "phone": jp_phone},
              "occurred_at": datetime.now(UTC).isoformat(), "points": 100, "points_balance": 900}
    asyncio.run(produce(broker.bootstrap, [("loyalty.actions", f"M-{tag}".encode(),
                                            orjson.dumps(points))]))

    wait_until(lambda: maac_calls_for(sandbox, uid_tw), 30, what="the Taipei push")
    for customer in (tokyo, texter):
        [held] = wait_until(lambda c=customer: held_record(broker, c), 20,
                            what="the message.deferred feedback record")
        assert held["payload"]["reason"] == "quiet_hours"
    assert {held_record(broker, c)[0]["payload"]["channel"] for c in (tokyo, texter)} == {
        "line", "sms"}
    assert time.time() < quiet_end - 2, "the module took too long to reach this test"
    assert not maac_calls_for(sandbox, uid_jp) and not texts_to(sandbox, jp_phone)

    push = wait_until(lambda: maac_calls_for(sandbox, uid_jp), QUIET_LEFT_S + 30,
                      what="the Tokyo push after the window")
    text = wait_until(lambda: texts_to(sandbox, jp_phone), 30, what="the SMS after the window")
    assert push[0]["at"] >= quiet_end - 0.5 and text[0]["at"] >= quiet_end - 0.5
    assert len(maac_calls_for(sandbox, uid_jp)) == 1 and len(texts_to(sandbox, jp_phone)) == 1


def test_opted_out_customer_gets_nothing_opted_in_one_is_messaged(broker, sandbox, worker):
    tag = uuid.uuid4().hex[:8]
    out, inn = f"OUT-{tag}", f"IN-{tag}"
    uid_out, uid_in = uid_for(9001, False), uid_for(9001, False)
    asyncio.run(produce(broker.bootstrap, [
        update({"customer_id": out, "line_uid": uid_out}, consents={"line": False}),
        update({"customer_id": inn, "line_uid": uid_in}, consents={"line": True})]))
    wait_until(lambda: (admin_profile(worker, out) or {}).get("consent", {}).get("line")
               and (admin_profile(worker, inn) or {}).get("consent", {}).get("line"), 30,
               what="consent in both profiles")
    send_triggers(broker, [journey_trigger(out, uid_out, f"consent-{tag}"),
                           journey_trigger(inn, uid_in, f"consent-{tag}")])

    wait_until(lambda: maac_calls_for(sandbox, uid_in), 30, what="the opted-in push")
    events = wait_until(lambda: insider_events(sandbox, out).get("relay_message_suppressed"), 30,
                        what="Insider told about the suppression")
    assert events[0]["event_params"]["custom"]["reason"] == "opted_out"
    assert events[0]["event_params"]["custom"]["channel"] == "line"
    assert not maac_calls_for(sandbox, uid_out)


def test_fourth_marketing_message_in_a_day_is_suppressed_and_a_replay_counts_nothing(
        broker, sandbox, worker):
    customer, uid = f"CAP-{uuid.uuid4().hex[:8]}", uid_for(9001, False)
    asyncio.run(produce(broker.bootstrap, [update({"customer_id": customer, "line_uid": uid})]))
    wait_until(lambda: admin_profile(worker, customer), 30, what="profile")
    triggers = [journey_trigger(customer, uid, f"cap-journey-{i}") for i in range(4)]
    for record in triggers:  # one at a time: the cap holds the fourth, whichever it is
        send_triggers(broker, [record])
        time.sleep(0.3)

    events = wait_until(lambda: insider_events(sandbox, customer).get("relay_message_suppressed"),
                        45, what="Insider told about the capped message")
    assert events[0]["event_params"]["custom"]["reason"] == "cap:marketing_3_per_24h"
    wait_until(lambda: len(maac_calls_for(sandbox, uid)) >= 3, 30, what="three pushes")
    assert (admin_profile(worker, customer) or {}).get("messages_sent") == 3

    send_triggers(broker, triggers)  # the same records again (a replay)
    time.sleep(6)
    assert len(maac_calls_for(sandbox, uid)) == 3
    assert len(insider_events(sandbox, customer).get("relay_message_suppressed", [])) == 1
    assert (admin_profile(worker, customer) or {}).get("messages_sent") == 3


def test_a_deferred_message_survives_a_worker_crash(broker, sandbox, worker, start_worker,
                                                    tmp_path_factory):
    """Runs last: it stops the module's worker, so only the crash-tested one reads the topics."""
    worker.kill()
    window_end = whole_second(time.time() + 35)
    env = {"MESSAGING_FILE": tokyo_night(tmp_path_factory, window_end, ("line",)),
           "DEFER_TICK_S": "1", "ADMIN_TOKEN": "adm1n", "APP_ID": "safety-crash",
           "data_dir": str(tmp_path_factory.mktemp("crash"))}
    first = start_worker(**env)
    customer, uid = f"CRASH-{uuid.uuid4().hex[:8]}", uid_for(9001, False)
    asyncio.run(produce(broker.bootstrap, [
        update({"customer_id": customer, "line_uid": uid}, {"country": "JP"})]))
    wait_until(lambda: admin_profile(first, customer), 30, what="profile")
    send_triggers(broker, [journey_trigger(customer, uid, "crash-journey")])
    wait_until(lambda: held_record(broker, customer), 20, what="the deferral")
    first.kill()  # the deferred message now lives only in the deferred table's changelog

    second = start_worker(port=first.web_port, **env)
    calls = wait_until(lambda: maac_calls_for(sandbox, uid), 60, what="the push after restart")
    assert calls[0]["at"] >= window_end - 0.5
    time.sleep(3)
    assert len(maac_calls_for(sandbox, uid)) == 1
    assert admin_profile(second, customer)["messages_sent"] == 1
