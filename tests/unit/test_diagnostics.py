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
