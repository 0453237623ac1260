import pytest

from app.config import ConfigError
from app.routing import parse_rules, plan

ENV = {"event_id": "e1", "type": "loyalty.tier.moved", "source": "air", "customer_key": "customer_id:C1",
       "identities": {"customer_id": "C1", "line_uid": "U" + "a" * 32},
       "attributes": {"tier_direction": "up", "points": "150"}, "payload": {}}


def rules(*routes):
    return parse_rules({"routes": list(routes)})


def test_type_glob_source_and_conditions():
    rs = rules(
        {"name": "a", "when": {"type": "loyalty.tier.*", "source": "air",
                               "if": [{"path": "attributes.tier_direction", "equals": "up"},
                                      {"path": "identities.line_uid", "exists": True},
                                      {"path": "attributes.points", "gte": 100}]},
         "deliver": [{"destination": "maac", "action": "push", "params": {"template_id": 1}}]},
        {"name": "b", "when": {"type": "loyalty.tier.moved", "source": "annex"},
         "deliver": [{"destination": "braze", "action": "track_event"}]},
        {"name": "c", "when": {"type": "loyalty.tier.moved",
                               "if": [{"path": "attributes.tier_direction", "equals": "down"}]},
         "deliver": [{"destination": "braze", "action": "track_event"}]},
    )
    planned = plan(rs, ENV)
    assert [(d["destination"], d["action"], d["route"]) for d in planned] == [("maac", "push", "a")]
    assert planned[0]["delivery_id"] == "maac:push:e1:a"
    assert planned[0]["customer_key"] == "customer_id:C1"
    assert planned[0]["params"] == {"template_id": 1}


def test_missing_path_fails_numeric_condition_quietly():
    rs = rules({"name": "a", "when": {"type": "*", "if": [{"path": "payload.nope", "gt": 1}]},
                "deliver": [{"destination": "braze", "action": "track_event"}]})
    assert plan(rs, ENV) == []


@pytest.mark.parametrize("doc,needle", [
    ({}, "routes"),
    ({"routes": [{"name": "x", "when": {}, "deliver": [{"destination": "a", "action": "b"}]}]}, "'x'"),
    ({"routes": [{"name": "x", "when": {"type": "t"}, "deliver": []}]}, "delivers nowhere"),
    ({"routes": [{"name": "x", "when": {"type": "t", "if": [{"path": "a", "like": 1}]},
                  "deliver": [{"destination": "a", "action": "b"}]}]}, "condition"),
])
def test_bad_rules_stop_startup_with_the_rule_named(doc, needle):
    with pytest.raises(ConfigError) as err:
        parse_rules(doc)
    assert needle in str(err.value)
    assert "ROUTES_FILE" in str(err.value)


def test_unknown_action_is_rejected_when_checked():
    with pytest.raises(ConfigError, match="unknown action braze.nope"):
        parse_rules({"routes": [{"name": "x", "when": {"type": "t"},
                                 "deliver": [{"destination": "braze", "action": "nope"}]}]},
                    known=lambda d, a: a != "nope")


def test_a_target_may_declare_its_message_channel_and_purpose():
    rs = rules({"name": "receipt", "when": {"type": "loyalty.tier.moved"},
                "deliver": [{"destination": "attentive", "action": "text", "channel": "sms",
                             "purpose": "transactional", "params": {"template": "hi"}},
                            {"destination": "maac", "action": "push", "purpose": "marketing"},
                            {"destination": "braze", "action": "track_event"}]})
    text, push, event = plan(rs, ENV)
    assert (text["channel"], text["purpose"]) == ("sms", "transactional")
    assert "channel" not in push and push["purpose"] == "marketing"
    assert "channel" not in event and "purpose" not in event  # undeclared: the policy decides


@pytest.mark.parametrize("target,needle", [
    ({"channel": "fax"}, "channel must be one of"),
    ({"purpose": "promo"}, "purpose must be one of"),
    ({"channel": "SMS"}, "'SMS'"),
])
def test_bad_message_declarations_name_the_rule(target, needle):
    with pytest.raises(ConfigError) as err:
        rules({"name": "x", "when": {"type": "t"},
               "deliver": [{"destination": "attentive", "action": "text", **target}]})
    assert needle in str(err.value) and "ROUTES_FILE rule 'x'" in str(err.value)


def test_rules_remembered_per_kind_plan_as_a_plain_list_does():
    from app.config import load_settings
    from app.routing import Rules, load_rules

    shipped = load_rules(load_settings({}).routes_file)
    assert isinstance(shipped, Rules)
    kinds = [("air", "loyalty.tier.moved"), ("air", "loyalty.points.earned"),
             ("journey", "journey.cart_abandoned"), ("annex", "loyalty_action.points_earned"),
             ("sessionm", "sessionm.offer_issued"), ("relay", "line.sent"), (None, "nothing.at_all"),
             ("annex", "loyalty.tier.moved")]
    for source, etype in kinds * 2:  # the second time from memory
        env = {**ENV, "source": source, "type": etype}
        assert plan(shipped, env) == plan(list(shipped), env), (source, etype)
    assert [r.name for r in shipped.for_kind("air", "loyalty.tier.moved")] == [
        r.name for r in shipped if r.matches_kind("air", "loyalty.tier.moved")]


def test_rules_memory_is_bounded_for_open_ended_types():
    from app.routing import Rules

    rs = rules({"name": "j", "when": {"type": "journey.*"},
                "deliver": [{"destination": "braze", "action": "track_event"}]})
    rs.MEMORY = 5
    for i in range(12):
        assert [r.name for r in rs.for_kind("journey", f"journey.j{i}")] == ["j"]
    assert len(rs._by_kind) <= 5
    assert isinstance(rs, Rules)
