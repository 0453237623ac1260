"""The task dump must show where a stuck task waits, through coroutines and async generators."""

from __future__ import annotations

import asyncio

from app.diagnostics import await_chain, task_stacks


async def innermost(gate: asyncio.Event) -> None:
    await gate.wait()


async def ticks(gate: asyncio.Event):
    await innermost(gate)
    yield 1


async def consumer(gate: asyncio.Event) -> None:
    async for _ in ticks(gate):
        pass


async def test_await_chain_follows_coroutines_and_async_generators():
    gate = asyncio.Event()
    task = asyncio.create_task(consumer(gate), name="stuck-consumer")
    await asyncio.sleep(0.01)
    chain = await_chain(task.get_coro())
    names = [frame.rsplit(" ", 1)[1] for frame in chain]
    assert names[:3] == ["consumer", "ticks", "innermost"], chain
    assert "stuck-consumer" in dict(task_stacks())
    assert "innermost" in dict(task_stacks())["stuck-consumer"]
    gate.set()
    await task


def test_await_chain_of_nothing_is_empty():
    assert await_chain(None) == []


async def test_faust_keeps_no_per_record_statistics_unless_its_metrics_are_asked_for(tmp_path):
    """Faust's default monitor counts and times every record for web pages the relay does not
    serve; the worker runs a quiet one, and FAUST_METRICS=true brings Faust's Prometheus one."""
    from faust.sensors.prometheus import PrometheusMonitor
    from faust.types import TP

    from app.agents.ops import QuietMonitor
    from app.config import load_settings
    from app.worker import create_app

    env = {"BROKER_URL": "kafka://127.0.0.1:9", "DATA_DIR": str(tmp_path)}
    monitor = create_app(load_settings(env)).monitor
    assert isinstance(monitor, QuietMonitor)
    monitor.on_message_in(TP("t", 0), 1, message=None)
    monitor.on_table_set(table=None, key="k", value="v")
    assert monitor.messages_received_total == 0 and not monitor.tables
    monitor.on_tp_commit({TP("t", 0): 5})  # the consumer's direct calls still work
    assert monitor.tp_committed_offsets[TP("t", 0)] == 5
    metrics_app = create_app(load_settings({**env, "FAUST_METRICS": "true"}))
    assert isinstance(metrics_app.monitor, PrometheusMonitor)
