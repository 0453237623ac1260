"""Resuming streams after a rebalance: flow control (which empties the stream queues) must resume
before the seek to committed offsets, or records fetched in between are dropped for good."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from faust.tables.recovery import Recovery

from app.faust_fixes import install_resume_order_fix


class Calls(list):
    def recorder(self, name, result=None):
        def call(*args, **kwargs):
            self.append(name)
            return result
        return call


def fake_recovery(calls: Calls, generation: int = 3):
    async def perform_seek():
        calls.append("perform_seek")

    async def send():
        calls.append("on_rebalance_complete")

    async def maybe_start():
        calls.append("fetcher.maybe_start")

    async def wait(coro, timeout=None):
        return await coro

    consumer = SimpleNamespace(
        assignment=lambda: {("events.normalized", 0), ("loyalty-relay-ledger-changelog", 0)},
        resume_partitions=lambda tps: calls.append(("resume_partitions", sorted(tps))),
        perform_seek=perform_seek, resume_flow=calls.recorder("resume_flow"))
    app = SimpleNamespace(
        consumer=consumer, consumer_generation_id=generation,
        on_rebalance_complete=SimpleNamespace(send=send),
        flow_control=SimpleNamespace(resume=calls.recorder("flow_control.resume")),
        conf=SimpleNamespace(broker_request_timeout=30), _fetcher=SimpleNamespace(
            maybe_start=maybe_start), on_rebalance_end=calls.recorder("on_rebalance_end"))
    log = SimpleNamespace(info=lambda *a, **k: None, warning=calls.recorder("warning"))
    app.assignor = SimpleNamespace(assigned_standbys=lambda: set())
    tables = SimpleNamespace(on_actives_ready=lambda: None, on_standbys_ready=lambda: None,
                             values=lambda: [])
    return SimpleNamespace(
        app=app, log=log, tables=tables, _wait=wait, actives_for_table={},
        standbys_for_table={}, _set_recovery_ended=calls.recorder("recovery_ended"),
        _is_changelog_tp=lambda tp: tp[0].endswith("-changelog"),
        completed=SimpleNamespace(set=calls.recorder("completed")))


@pytest.mark.parametrize("method", ["_resume_streams", "on_recovery_completed"])
async def test_flow_control_resumes_before_the_seek(method):
    install_resume_order_fix()
    calls = Calls()
    await getattr(Recovery, method)(fake_recovery(calls), generation_id=3)
    assert calls.index("flow_control.resume") < calls.index("perform_seek")
    assert calls.index("perform_seek") < calls.index("resume_flow")
    assert ("resume_partitions", [("events.normalized", 0)]) in calls  # changelogs stay paused
    assert calls[-1] == "on_rebalance_end"


@pytest.mark.parametrize("method", ["_resume_streams", "on_recovery_completed"])
async def test_stream_partitions_resume_only_after_the_seek(method):
    """The flow is on during the seek (recovery turned it on for the changelogs): a stream
    partition resumed before it would be fetched and processed from where it stood, then again
    from the committed offset."""
    install_resume_order_fix()
    calls = Calls()
    await getattr(Recovery, method)(fake_recovery(calls), generation_id=3)
    resumed = calls.index(("resume_partitions", [("events.normalized", 0)]))
    assert calls.index("perform_seek") < resumed < calls.index("completed")


@pytest.mark.parametrize("method", ["_resume_streams", "on_recovery_completed"])
async def test_a_newer_rebalance_leaves_the_streams_alone(method):
    install_resume_order_fix()
    calls = Calls()
    await getattr(Recovery, method)(fake_recovery(calls, generation=4), generation_id=3)
    assert "perform_seek" not in calls and "resume_flow" not in calls
    assert "warning" in calls


async def test_flush_waits_for_every_buffered_write_even_when_each_hand_over_is_slow():
    from faust.transport.producer import ProducerBuffer

    from app.faust_fixes import install_complete_flush_fix

    install_complete_flush_fix()
    handed_over = []

    class SlowChannel:
        async def publish_message(self, fut, wait=False):
            await asyncio.sleep(0.15)  # longer than Faust's 0.1 s patience per write
            handed_over.append(fut)

    buffer = ProducerBuffer()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))
    await buffer.start()
    try:
        for i in range(4):
            buffer.put(SimpleNamespace(message=SimpleNamespace(channel=SlowChannel()), i=i))
        await buffer.flush()
        assert [fut.i for fut in handed_over] == [0, 1, 2, 3]
        assert buffer.size == 0
    finally:
        await buffer.stop()


async def test_flush_covers_writes_buffered_while_it_waits():
    """A table write made while a flush waits (another agent's) is part of what it waits for:
    the flush returns only once the buffer is empty and nothing is half-way to the producer."""
    from faust.transport.producer import ProducerBuffer

    from app.faust_fixes import install_complete_flush_fix

    install_complete_flush_fix()
    handed_over = []
    buffer = ProducerBuffer()

    class Channel:
        async def publish_message(self, fut, wait=False):
            await asyncio.sleep(0.01)
            if fut.i == 0:  # written by another agent while the first is being handed over
                for i in (3, 4):
                    buffer.put(SimpleNamespace(message=SimpleNamespace(channel=self), i=i))
            handed_over.append(fut.i)

    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))
    await buffer.start()
    try:
        await buffer.flush()  # nothing buffered: returns at once
        for i in range(3):
            buffer.put(SimpleNamespace(message=SimpleNamespace(channel=Channel()), i=i))
        await buffer.flush()
        assert handed_over == [0, 1, 2, 3, 4]
        assert buffer.size == 0
    finally:
        await buffer.stop()


async def test_worker_consumer_fetch_wait_is_capped(tmp_path):
    """Tansu answers a waiting fetch only when the wait is over, and Faust hard-codes 1,500 ms:
    the worker's consumer must use the configured wait instead (read by the fetcher at start)."""
    from app.config import load_settings
    from app.worker import create_app

    settings = load_settings({"BROKER_URL": "kafka://127.0.0.1:9", "FETCH_MAX_WAIT_MS": "40",
                              "DATA_DIR": str(tmp_path)})
    app = create_app(settings)
    thread = app.consumer._thread
    consumer = thread._create_worker_consumer(app.transport)
    assert consumer._fetch_max_wait_ms == 40
    # Kafka answers waiting fetches early: only the embedded broker needs the short wait.
    assert load_settings({"BROKER_FLAVOR": "tansu"}).fetch_max_wait_ms == 20
    assert load_settings({}).fetch_max_wait_ms == 500
