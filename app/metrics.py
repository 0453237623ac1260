"""Prometheus metrics. Labels carry only bounded values: topic, source, destination, action,
outcome and reason codes; never identifiers or personal data."""

from __future__ import annotations

import prometheus_client

CACHED_CHILDREN_MAX = 10_000  # per metric; label values are bounded, this only guards a bug


class _CachedLabels:
    """`labels(...)` answered from a dict once a child exists: prometheus_client validates the
    values and takes a lock on every call (~2-3 us, several per event: ~3 % of the worker)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._relay_children: dict[tuple, object] = {}

    def labels(self, *values, **named):
        if named:
            return super().labels(*values, **named)
        child = self._relay_children.get(values)
        if child is None:
            child = super().labels(*values)
            if len(self._relay_children) < CACHED_CHILDREN_MAX:
                self._relay_children[values] = child
        return child


class Counter(_CachedLabels, prometheus_client.Counter):
    pass


class Gauge(_CachedLabels, prometheus_client.Gauge):
    pass


class Histogram(_CachedLabels, prometheus_client.Histogram):
    pass


CONSUMED = Counter("relay_events_consumed_total", "Ingress records consumed", ["topic"])
NORMALIZED = Counter("relay_events_normalized_total", "Envelopes produced", ["source", "type"])
UNMAPPED = Counter("relay_events_unmapped_total", "Events kept but not mapped", ["source"])
INGRESS_DLQ = Counter("relay_ingress_dead_letters_total", "Ingress records dead-lettered",
                      ["source", "reason"])
ROUTED = Counter("relay_deliveries_routed_total", "Deliveries planned", ["destination", "action"])
UNROUTED = Counter("relay_events_unrouted_total", "Envelopes no rule asked for", ["source"])
OUTCOMES = Counter("relay_delivery_outcomes_total", "Delivery outcomes",
                   ["destination", "action", "status"])
REQUESTS = Counter("relay_destination_requests_total", "Destination HTTP requests",
                   ["destination", "outcome"])
REQUEST_SECONDS = Histogram("relay_destination_request_seconds", "Destination request latency",
                            ["destination"],
                            buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
BATCH_SIZE = Histogram("relay_delivery_batch_size", "Deliveries per sink batch", ["destination"],
                       buckets=(1, 5, 10, 25, 50, 75, 100, 150, 250, 500, 1000))
RETRIES = Counter("relay_delivery_retries_total", "Retries", ["destination", "stage"])
DLQ = Counter("relay_delivery_dead_letters_total", "Deliveries dead-lettered",
              ["destination", "reason"])
LEDGER_HITS = Counter("relay_ledger_hits_total", "Deliveries skipped as already done",
                      ["destination"])
RATE_LIMIT_WAIT = Counter("relay_rate_limit_wait_seconds_total", "Time spent waiting for tokens",
                          ["destination"])
AUTH_FAILURES = Counter("relay_destination_auth_failures_total", "401/403 from a destination",
                        ["destination"])
LIMIT_SHARE = Gauge("relay_rate_limit_share",
                    "Share of a destination's documented limits this worker uses (its share of "
                    "the destination's delivery partitions)", ["destination"])
BREAKER_STATE = Gauge("relay_circuit_state", "0 closed, 1 half-open, 2 open, 3 paused",
                      ["destination"])
EVENT_AGE = Histogram("relay_event_age_seconds", "Event age at delivery", ["destination"],
                      buckets=(.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600))
IDENTITY_UPDATES = Counter("relay_identity_updates_total", "Identity table writes", ["kind"])
IDENTITY_SHORTCUT = Counter(
    "relay_identity_shortcut_total",
    "Identity work run by the stage that had it (local) or sent through its topic (topic): "
    "envelopes on events.normalized, lookups and binds on identity.claims",
    ["topic", "path"])
SAFETY_DECISIONS = Counter("relay_messaging_decisions_total",
                           "Messages held back by consent, frequency caps or quiet hours",
                           ["channel", "decision", "reason"])
DEFERRED_RELEASED = Counter("relay_deferred_released_total",
                            "Deferred messages released when quiet hours ended", ["destination"])
WEBHOOKS = Counter("relay_webhooks_total", "MAAC webhooks received", ["result"])

BREAKER_CODES = {"closed": 0, "half_open": 1, "open": 2, "paused": 3}

# --- operations (app/agents/ops.py): lag, retry-topic depth, rebalances ---
# Labels: topic names from the catalog and partition numbers, both bounded by the catalog.
CONSUMER_LAG = Gauge("relay_consumer_lag_messages",
                     "Records behind the high watermark (committed position), per assigned "
                     "topic-partition", ["topic", "partition"])
CONSUMER_LAG_SECONDS = Gauge("relay_consumer_lag_seconds",
                             "Estimated age of the oldest unconsumed record, per assigned "
                             "topic-partition (0 when caught up)", ["topic", "partition"])
RETRY_DEPTH = Gauge("relay_retry_topic_depth_messages",
                    "Records waiting in deliveries.retry.<destination> on this worker's partitions",
                    ["destination"])
ROCKSDB_MEMORY = Gauge("relay_rocksdb_memory_bytes",
                       "Memory of the worker's shared RocksDB budget in use (rocksdb:// stores)",
                       ["kind"])
REBALANCES = Counter("relay_rebalances_total", "Consumer group rebalances this worker went through")
GC_FROZEN = Gauge("relay_gc_frozen_objects",
                  "Long-lived objects the garbage collector no longer walks (app/heap.py)")

# --- LINE feedback (app/agents/feedback.py) ---
# Labels: the feedback record type (line.sent, line.unreachable, line.opened, ...) and bounded
# poll outcomes; never LINE uids, customer ids or MAAC event ids.
FEEDBACK_RECORDS = Counter("relay_line_feedback_records_total",
                           "LINE results published to feedback.insider", ["type"])
REPORT_POLLS = Counter("relay_maac_report_polls_total",
                       "MAAC topic-report polls by outcome (changed, unchanged, error)",
                       ["outcome"])
FEEDBACK_UNMATCHED = Counter("relay_line_feedback_unmatched_total",
                             "LINE results naming no customer Insider knows (not sent)", ["type"])

# --- identity graph (app/agents/identity.py, app/agents/route.py) ---
# Labels: identifier types of the configured unify keys and reason codes; never values.
IDENTITY_MERGES = Counter("relay_identity_merges_total", "Profiles merged into another")
IDENTITY_QUARANTINED = Counter("relay_identity_quarantined_total",
                               "Unify-key values quarantined as ambiguous (no merge)", ["type"])
IDENTITY_REJECTED = Counter("relay_identity_rejected_total",
                            "Identifiers rejected by normalization (never stored)", ["reason"])
