import pytest

from app.config import ConfigError, load_settings


def test_defaults_are_documented_values():
    settings = load_settings({})
    assert settings.broker_url == ""
    assert settings.store == "memory://"
    assert settings.partitions == 4
    assert settings.web_port == 6066
    assert settings.destination("braze").configured is False
    assert settings.event_loop == "uvloop"
    assert load_settings({"EVENT_LOOP": " AsyncIO "}).event_loop == "asyncio"


@pytest.mark.parametrize("env,name", [
    ({"PARTITIONS": "many"}, "PARTITIONS"),
    ({"PARTITIONS": "0"}, "PARTITIONS"),
    ({"WEB_PORT": "70000"}, "WEB_PORT"),
    ({"STORE": "redis://"}, "STORE"),
    ({"BROKER_URL": "localhost:9092"}, "BROKER_URL"),
    ({"BRAZE_BASE_URL": "rest.braze.com"}, "BRAZE_BASE_URL"),
    ({"ROUTES_FILE": "/nope/routes.yaml"}, "ROUTES_FILE"),
    ({"DEFAULT_REGION": "Taiwan"}, "DEFAULT_REGION"),
    ({"EMIT_OUTCOMES": "maybe"}, "EMIT_OUTCOMES"),
    ({"RETRY_BASE_S": "-1"}, "RETRY_BASE_S"),
    ({"EVENT_LOOP": "gevent"}, "EVENT_LOOP"),
])
def test_a_wrong_value_names_the_variable(env, name):
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    assert name in str(err.value)
    assert "\n" not in str(err.value)


def test_destination_credentials_and_extras():
    settings = load_settings({
        "BRAZE_BASE_URL": "https://rest.iad-01.braze.com/", "BRAZE_API_KEY": "k",
        "INSIDER_BASE_URL": "https://unification.useinsider.com", "INSIDER_TOKEN": "t",
        "INSIDER_PARTNER": "shop", "BROKER_URL": "kafka://h1:9092;kafka://h2:9092",
    })
    assert settings.destination("braze").base_url == "https://rest.iad-01.braze.com"
    assert settings.destination("braze").configured
    assert settings.destination("insider").extra["partner"] == "shop"
    assert settings.broker_url == "kafka://h1:9092;kafka://h2:9092"


def test_a_destination_may_have_its_own_batch_window():
    settings = load_settings({"SINK_BATCH_WINDOW_S": "0.02", "INSIDER_BATCH_WINDOW_S": " 0.5 ",
                              "BRAZE_BATCH_WINDOW_S": "0"})
    assert settings.batch_window_s("insider") == 0.5
    assert settings.batch_window_s("braze") == 0.0  # zero is a value: no waiting at all
    assert settings.batch_window_s("maac") == 0.02
    assert settings.batch_window_s("attentive", gathers=False) == 0.0  # one per request
    assert settings.batch_window_s("insider", gathers=False) == 0.5  # its own, when set
    with pytest.raises(ConfigError, match="INSIDER_BATCH_WINDOW_S"):
        load_settings({"INSIDER_BATCH_WINDOW_S": "soon"})
