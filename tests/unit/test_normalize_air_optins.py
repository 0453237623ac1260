"""AIR consumer records keep their opt-ins per channel (consent is kept per channel)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from app.config import Settings
from app.normalize import air
from app.normalize.air import channel_optins
from app.samples import realistic_air

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "air"
CONSUMER_UPDATE = json.loads((FIXTURES / "wallet_consumer_update.json").read_text())


def with_communication(communication) -> dict:
    doc = copy.deepcopy(CONSUMER_UPDATE)
    doc["request"]["body"]["communication"] = communication
    for op in doc["atomicOperations"]:
        op["objectValue"]["data"]["communication"] = communication
    return doc


def envelope(doc: dict) -> dict:
    [env] = air.normalize(doc, {}, Settings())
    return env


def test_fixture_flags_reach_payload_and_attributes():
    env = envelope(CONSUMER_UPDATE)
    assert env["payload"]["consumer"]["optins"] == {"marketing": True, "sms": True, "email": True}
    attrs = env["attributes"]
    assert (attrs["marketing_optin"], attrs["sms_optin"], attrs["email_optin"]) == (True, True, True)


def test_messy_values_and_a_channel_opt_out():
    env = envelope(with_communication([{"optin": {"MARKETING": "Y", "sms": "false", "Email": 0,
                                                  "line": "yes", "push": "maybe"}}]))
    assert env["payload"]["consumer"]["optins"] == {
        "marketing": True, "sms": False, "email": False, "line": True}
    assert env["attributes"]["sms_optin"] is False
    assert "push_optin" not in env["attributes"]


@pytest.mark.parametrize("communication,expected", [
    ([{"type": "SMS", "optin": "Y"}, {"channel": "email", "optin": False}],
     {"sms": True, "email": False}),
    ([{"optin": {"sms": True}}, {"optin": {"sms": "N"}}], {"sms": False}),  # the opt-out wins
    ([{"optin": True}], {"marketing": True}),
    ({"optin": {"email": "1"}}, {"email": True}),
    ([{"optin": {"sms": None, "type": "x", "value": True}}], {}),
    ("not a list", {}),
    ([], {}),
    (None, {}),
])
def test_channel_optins_shapes(communication, expected):
    assert channel_optins({"communication": communication}) == expected


def test_programme_joined_carries_channel_optins():
    doc = realistic_air("SERVICE.WALLET.ACCOUNTS.CREATE", customer_id="C7", marketing_optin=False)
    env = envelope(doc)
    assert env["type"] == "loyalty.programme.joined"
    assert env["attributes"]["marketing_optin"] is False
    assert env["attributes"]["sms_optin"] is False
    assert env["attributes"]["email_optin"] is True
