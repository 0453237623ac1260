"""Operations: consumer lag (messages and seconds), retry-topic depth, rebalances, Faust's sensor.

Lag is measured by this worker for the catalog topic-partitions assigned to it, every
`LAG_INTERVAL_S`, from what the consumer already knows (no extra broker requests):

- **messages** = high watermark (from the last fetch response) - committed position (the next
  offset the group will read; the consumer's read position + 1 before the first commit). Table
  changelogs and Faust's internal topics are left out. Each partition is assigned to one worker
  at a time, so `sum by (topic)` over workers is the group's lag.
- **seconds** = 0 when caught up; otherwise now - the timestamp of the last record this worker
  acknowledged on the partition (the next unconsumed record is at least that old or younger, so
  this is a slight over-estimate that grows while a worker is stuck, which is what an alert wants).
  Before the first acknowledgement after an assignment it uses the first record read (exactly the
  next unconsumed one); before anything was read, the time since the lag was first seen (a lower
  bound). Timestamps are the records' Kafka timestamps (CreateTime, or append time on brokers
  that rewrite them, such as the embedded one).

With `FAUST_METRICS=true`, Faust's own Prometheus monitor (`faust_*` metrics: messages in/out,
table operations, commit and send latency, assignments) is installed on the same registry, so
`/metrics` serves both. It is off by default: it costs about 50 us per record per agent on this
machine (several locked counter updates per message), against under 1 us for this module's sensor.
Without it, Faust's default monitor is replaced by `QuietMonitor`: the default one keeps
per-record statistics for Faust's own web pages, which the relay does not serve (~2 % of CPU).
"""

from __future__ import annotations

import time
from typing import Any

import faust
import structlog
from faust.sensors import Monitor, Sensor
from prometheus_client import REGISTRY

from app import metrics
from app.agents.context import Relay
from app.config import DESTINATIONS
from app.diagnostics import install_task_dump
from app.faust_fixes import aiokafka_client

log = structlog.get_logger(__name__)

LAG_INTERVAL_S = 2.0
RETRY_PREFIX = "deliveries.retry."

_faust_metrics = None  # created once per process: the registry rejects duplicate names


def _install_faust_monitor(app) -> None:
    """Faust's Prometheus monitor, without its own /metrics page (app.web serves the registry)."""
    global _faust_metrics
    from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor

    if _faust_metrics is None:
        _faust_metrics = FaustMetrics.create(REGISTRY, "faust")
    app.monitor = PrometheusMonitor(metrics=_faust_metrics)


class QuietMonitor(Monitor):
    """Faust's monitor without its per-record bookkeeping (counters, timings and runtime lists
    per message, stream event, table access and send, read only by Faust's web pages). What the
    consumer calls on it directly (end offsets, commits) is kept."""

    on_message_in = Sensor.on_message_in
    on_stream_event_in = Sensor.on_stream_event_in
    on_stream_event_out = Sensor.on_stream_event_out
    on_message_out = Sensor.on_message_out
    on_table_get = Sensor.on_table_get
    on_table_set = Sensor.on_table_set
    on_table_del = Sensor.on_table_del
    on_send_initiated = Sensor.on_send_initiated
    on_send_completed = Sensor.on_send_completed
    on_send_error = Sensor.on_send_error


class OpsSensor(Sensor):
    """Remembers record timestamps per partition (for lag in seconds) and counts rebalances."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.acked_ts: dict[Any, float] = {}
        self.first_read_ts: dict[Any, float] = {}

    def on_message_in(self, tp, offset: int, message) -> None:
        if tp not in self.first_read_ts:
            self.first_read_ts[tp] = message.timestamp

    def on_message_out(self, tp, offset: int, message) -> None:
        self.acked_ts[tp] = message.timestamp

    def on_rebalance_start(self, app) -> dict:
        metrics.REBALANCES.inc()
        # Partitions may move: what we knew about them belongs to the old assignment.
        self.acked_ts.clear()
        self.first_read_ts.clear()
        return super().on_rebalance_start(app)


class LagMeter:
    def __init__(self, relay: Relay, sensor: OpsSensor):
        self.relay = relay
        self.sensor = sensor
        self.exported: set[tuple[str, str]] = set()
        self.lag_since: dict[Any, float] = {}

    def measure(self, now: float | None = None) -> dict[Any, tuple[int, float]]:
        """(messages, seconds) per assigned catalog topic-partition this worker has a high
        watermark for."""
        now = time.time() if now is None else now
        consumer = self.relay.app.consumer
        result = {}
        for tp in consumer.assignment():
            if tp.topic not in self.relay.catalog:
                continue
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = consumer._committed_offset.get(tp)
            if position is None:
                read = consumer._read_offset.get(tp)
                position = read + 1 if read is not None else None
            if position is None:
                position = 0
            messages = max(0, highwater - position)
            if not messages:
                self.lag_since.pop(tp, None)
                result[tp] = (0, 0.0)
                continue
            ts = self.sensor.acked_ts.get(tp) or self.sensor.first_read_ts.get(tp)
            if ts is None:
                ts = self.lag_since.setdefault(tp, now)
            result[tp] = (messages, max(0.0, now - ts))
        return result

    def export(self) -> None:
        lags = self.measure()
        current, depth = set(), dict.fromkeys(DESTINATIONS, 0)
        for tp, (messages, seconds) in lags.items():
            labels = (tp.topic, str(tp.partition))
            current.add(labels)
            metrics.CONSUMER_LAG.labels(*labels).set(messages)
            metrics.CONSUMER_LAG_SECONDS.labels(*labels).set(round(seconds, 3))
            if tp.topic.startswith(RETRY_PREFIX):
                dest = tp.topic[len(RETRY_PREFIX):]
                if dest in depth:
                    depth[dest] += messages
        for labels in self.exported - current:  # partitions that moved to another worker
            for gauge in (metrics.CONSUMER_LAG, metrics.CONSUMER_LAG_SECONDS):
                try:
                    gauge.remove(*labels)
                except KeyError:
                    pass
        self.exported = current
        for dest, n in depth.items():
            metrics.RETRY_DEPTH.labels(dest).set(n)


def install(relay: Relay) -> None:
    app = relay.app
    if relay.settings.faust_metrics:
        _install_faust_monitor(app)
    else:
        app.monitor = QuietMonitor()
    sensor = OpsSensor()
    app.sensors.add(sensor)
    meter = LagMeter(relay, sensor)
    for dest in DESTINATIONS:
        metrics.RETRY_DEPTH.labels(dest).set(0)

    @app.task
    async def diagnostics_on_signal() -> None:
        install_task_dump(lambda: consumer_state(app))

    @app.timer(LAG_INTERVAL_S, name="ops-lag")
    async def measure_lag() -> None:
        if app.rebalancing:
            return
        try:
            meter.export()
        except Exception as exc:  # never let a metrics bug take the worker down
            log.warning("ops.lag_failed", error=type(exc).__name__)


def consumer_state(app: faust.App) -> dict[str, object]:
    """What decides whether the consumer fetches: flow, assignment, paused partitions."""
    consumer = app.consumer

    def names(tps) -> list[str]:
        return sorted(f"{tp.topic}/{tp.partition}" for tp in tps)
    return {"rebalancing": app.rebalancing, "flow_active": consumer.flow_active,
            "assigned": len(consumer.assignment()),
            "active": len(consumer._get_active_partitions()),
            "paused": names(consumer._paused_partitions),
            "paused_in_client": names(client_paused(consumer)),
            "buffered": names(getattr(consumer, "_buffered_partitions", ())),
            "generation": app.consumer_generation_id,
            "unfetched": unfetched(consumer),
            "behind": partitions_behind(consumer)}


def client_paused(consumer) -> set:
    """The partitions aiokafka itself leaves out of its fetches (app.faust_fixes)."""
    client = aiokafka_client(consumer)
    return client.paused() if client is not None else set()


def unfetched(consumer) -> list[str]:
    """Assigned stream partitions no fetch has answered yet (no high watermark): a partition
    the consumer never fetches holds its records back without showing as behind."""
    return sorted(f"{tp.topic}/{tp.partition}" for tp in stream_partitions(consumer)
                  if consumer.highwater(tp) is None)


def stream_partitions(consumer) -> list:
    """Assigned partitions the agents read: table changelogs are only read at recovery and are
    never committed, by design."""
    return [tp for tp in consumer.assignment() if not tp.topic.endswith("-changelog")]


def partitions_behind(consumer) -> dict[str, dict]:
    """Offsets of each assigned partition whose committed offset trails the broker's end: where
    a stuck partition shows whether it is fetched, read, acknowledged or committed."""
    behind = {}
    for tp in stream_partitions(consumer):
        high, committed = consumer.highwater(tp), consumer._committed_offset.get(tp)
        # Never committed but holding records counts too (a partition that was never read).
        if not high or (committed is not None and committed >= high):
            continue
        acked = consumer._acked.get(tp) or []
        behind[f"{tp.topic}/{tp.partition}"] = {
            "committed": committed, "highwater": high, "read": consumer._read_offset.get(tp),
            "acked": len(acked), "acked_min": min(acked, default=None),
            "gaps": len(consumer._gap.get(tp) or ()),
            "unacked": sum(1 for m in consumer._unacked_messages if m.tp == tp),
            **fetcher_view(consumer, tp)}
    return behind


def fetcher_view(consumer, tp) -> dict[str, object]:
    """aiokafka's side of a partition: the position it fetches from, and whether it holds
    fetched records not yet handed to Faust (what it paused is the state's `paused_in_client`)."""
    try:
        client = aiokafka_client(consumer)
        state = client._subscription.subscription.assignment.state_value(tp)
        held = client._fetcher._records.get(tp)
    except Exception:  # a diagnostic must not fail on a consumer between assignments
        return {}
    records = getattr(held, "_partition_records", None)
    return {"position": state.position if state.has_valid_position else None,
            "held": None if held is None else type(held).__name__,
            "held_next": getattr(records, "next_fetch_offset", None)}
