"""The Faust app: catalog topics, tables, and one short agent module per stage.

Agents are `async for` loops (app/agents/); the work is in `app.pipeline` (pure) and
`app.delivery` (I/O). Values are raw bytes encoded with orjson: cheaper than Faust records on
every hop.
"""

from __future__ import annotations

import faust

from app import fast_recovery, faust_drain, heap, web
from app.agents import deferred, feedback, identity, ingress, ops, route, sinks
from app.agents.context import Relay
from app.batches import BatchAgents
from app.catalog import load_catalog
from app.config import Settings
from app.faust_fixes import (
    install_changelog_livelock_fix,
    install_client_pause,
    install_complete_flush_fix,
    install_fetch_wait,
    install_never_committed_seek_fix,
    install_resume_order_fix,
)
from app.partitioner import RememberingPartitioner
from app.routing import load_rules

STAGES = (ingress, identity, route, sinks, deferred, feedback, ops)


def create_app(settings: Settings, trace_ids: bool = False) -> faust.App:
    """Build the relay's Faust app. `trace_ids` adds delivery ids to bodies (sandbox only)."""
    install_resume_order_fix()
    install_complete_flush_fix()
    install_never_committed_seek_fix()
    install_client_pause()
    install_changelog_livelock_fix()
    install_fetch_wait(settings.fetch_max_wait_ms)
    fast_recovery.install()
    faust_drain.install()
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        store=settings.store,
        datadir=settings.data_dir,
        web_host=settings.web_host,
        web_port=settings.web_port,
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10,
        broker_rebalance_timeout=10,
        broker_heartbeat_interval=1,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=8192,
        stream_processing_timeout=settings.stream_stall_s,
        table_standby_replicas=0,
        producer_linger_ms=5,
        producer_max_batch_size=256 * 1024,
        producer_partitioner=RememberingPartitioner(),
        # Static group membership: a restarted member with the same id gets its partitions back
        # without a rebalance (within the session timeout).
        **({"consumer_group_instance_id": settings.group_instance_id}
           if settings.group_instance_id else {}),
    )
    # read by the fetch loop (app.faust_drain)
    app.batch_agents = BatchAgents(app, per_record_sensors=settings.faust_metrics)
    relay = Relay(app, settings, load_catalog(settings), load_rules(settings.routes_file),
                  trace_ids=trace_ids)
    app.relay = relay
    for stage in STAGES:
        stage.install(relay)
    relay.install_buffer_writers()
    app.batch_agents.before_ack = relay.flush_after_batch
    web.install(app, relay)
    heap.install(app)
    return app
