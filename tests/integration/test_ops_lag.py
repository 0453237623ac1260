"""The lag arithmetic of app/agents/ops.py and the live view's reading of /metrics, on fakes
(no broker): the live behaviour is covered in test_ops_metrics.py."""

from __future__ import annotations

from types import SimpleNamespace

from faust.types import TP
from prometheus_client import generate_latest

from app import metrics
from app.accounting import Tracker
from app.agents.ops import LagMeter, OpsSensor
from app.run import Ops, render

CATALOG = {"air.outbound": None, "deliveries.retry.braze": None}


class FakeConsumer:
    def __init__(self, highwaters, committed=None, read=None):
        self.highwaters = highwaters
        self._committed_offset = committed or {}
        self._read_offset = read or {}

    def assignment(self):
        return set(self.highwaters)

    def highwater(self, tp):
        return self.highwaters[tp]


def meter(consumer) -> tuple[LagMeter, OpsSensor]:
    sensor = OpsSensor()
    relay = SimpleNamespace(app=SimpleNamespace(consumer=consumer), catalog=CATALOG)
    return LagMeter(relay, sensor), sensor


A0, A1, R0 = TP("air.outbound", 0), TP("air.outbound", 1), TP("deliveries.retry.braze", 0)
CHANGELOG = TP("loyalty-relay-ledger-changelog", 0)


def test_lag_in_messages_uses_the_committed_position_then_the_read_position():
    consumer = FakeConsumer({A0: 100, A1: 50, R0: 7, CHANGELOG: 999},
                            committed={A0: 90}, read={A1: 44})
    lag, _ = meter(consumer)
    result = lag.measure(now=1000.0)
    assert result[A0][0] == 10
    assert result[A1][0] == 5  # read offset 44 -> next to read is 45
    assert result[R0][0] == 7  # nothing read or committed yet: all of it
    assert CHANGELOG not in result  # table changelogs are not consumer lag


def test_lag_in_seconds_from_acked_then_first_read_then_first_seen():
    consumer = FakeConsumer({A0: 100, A1: 50, R0: 0}, committed={A0: 90, A1: 40})
    lag, sensor = meter(consumer)
    sensor.on_message_in(A0, 85, SimpleNamespace(timestamp=900.0))
    sensor.on_message_out(A0, 89, SimpleNamespace(timestamp=970.0))
    sensor.on_message_in(A1, 40, SimpleNamespace(timestamp=940.0))
    sensor.on_message_in(A1, 41, SimpleNamespace(timestamp=990.0))  # only the first read counts
    result = lag.measure(now=1000.0)
    assert result[A0] == (10, 30.0)
    assert result[A1] == (10, 60.0)
    assert result[R0] == (0, 0.0)  # caught up
    consumer.highwaters[R0] = 3  # lag appears before anything was read: time since first seen
    assert lag.measure(now=1010.0)[R0] == (3, 0.0)
    assert lag.measure(now=1025.0)[R0] == (3, 15.0)
    before = metrics.REBALANCES._value.get()
    sensor.on_rebalance_start(SimpleNamespace(
        sensors=None, tables=None, consumer=None, monitor=None))
    assert metrics.REBALANCES._value.get() == before + 1
    assert not sensor.acked_ts and not sensor.first_read_ts


def test_export_sets_gauges_and_retry_depth_and_drops_moved_partitions():
    consumer = FakeConsumer({A0: 100, R0: 12}, committed={A0: 100, R0: 2})
    lag, _ = meter(consumer)
    lag.export()
    text = generate_latest().decode()
    assert 'relay_consumer_lag_messages{partition="0",topic="air.outbound"} 0.0' in text
    assert 'relay_retry_topic_depth_messages{destination="braze"} 10.0' in text
    del consumer.highwaters[R0]  # partition moved to another worker
    lag.export()
    text = generate_latest().decode()
    assert 'topic="deliveries.retry.braze"' not in text
    assert 'relay_retry_topic_depth_messages{destination="braze"} 0.0' in text


def test_live_view_reads_lag_retry_depth_and_dlq_from_metrics():
    ops = Ops()
    ops.update("\n".join([
        "# TYPE relay_consumer_lag_messages gauge",
        'relay_consumer_lag_messages{topic="air.outbound",partition="0"} 7',
        'relay_consumer_lag_messages{topic="deliveries.maac",partition="1"} 5',
        "# TYPE relay_consumer_lag_seconds gauge",
        'relay_consumer_lag_seconds{topic="air.outbound",partition="0"} 4.5',
        "# TYPE relay_retry_topic_depth_messages gauge",
        'relay_retry_topic_depth_messages{destination="maac"} 3',
        "# TYPE relay_delivery_dead_letters_total counter",
        'relay_delivery_dead_letters_total{destination="maac",reason="http_400"} 2',
        'relay_delivery_dead_letters_total{destination="maac",reason="retries"} 1',
        ""]))
    assert (ops.lag_messages, ops.lag_seconds) == (12, 4.5)
    assert ops.in_retry == {"maac": 3} and ops.dlq == {"maac": 3}
    tracker = Tracker()
    tracker.add({"stage": "route", "status": "routed", "event_id": "e1",
                 "deliveries": [["maac", "push", "d1"]]})
    table = render(tracker, 1, 0.0, ops)
    assert "lag 12 msgs / 4.5s" in table.title and "events/s in" in table.title
    assert [c.header for c in table.columns][:6] == ["destination", "sent", "delivered",
                                                     "failed", "in_retry", "dlq"]
    assert table.columns[4]._cells == ["3"] and table.columns[5]._cells == ["3"]


def test_group_instance_id_reaches_the_consumer_config():
    from app.config import load_settings
    from app.worker import create_app

    broker = {"BROKER_URL": "kafka://127.0.0.1:9092"}
    static = create_app(load_settings({**broker, "GROUP_INSTANCE_ID": "loyalty-relay-0"}))
    assert static.conf.consumer_group_instance_id == "loyalty-relay-0"
    dynamic = create_app(load_settings(broker))
    assert not dynamic.conf.consumer_group_instance_id
