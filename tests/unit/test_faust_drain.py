"""The cheaper record hand-over (app.faust_drain) behaves like Faust's wait_first race."""

from __future__ import annotations

import asyncio

import pytest
from mode import Service
from mode.utils.locks import Event

from app import faust_drain


class Consumer(Service):
    """What hand_over needs from Faust's consumer: the flow event and wait_first."""

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = Event()
        self.races = 0

    async def wait_first(self, *coros, timeout=None):
        self.races += 1
        return await super().wait_first(*coros, timeout=timeout)


async def test_a_hand_over_that_does_not_wait_skips_the_race():
    consumer, queue = Consumer(), asyncio.Queue(maxsize=2)
    await faust_drain.hand_over(consumer, queue.put, "record")
    assert queue.get_nowait() == "record" and consumer.races == 0


async def test_a_hand_over_blocked_on_a_full_queue_finishes_when_room_appears():
    consumer, queue = Consumer(), asyncio.Queue(maxsize=1)
    queue.put_nowait("earlier")
    handing = asyncio.ensure_future(faust_drain.hand_over(consumer, queue.put, "record"))
    await asyncio.sleep(0.01)
    assert not handing.done() and consumer.races == 1
    assert queue.get_nowait() == "earlier"
    await asyncio.wait_for(handing, 1)
    assert queue.get_nowait() == "record"


async def test_a_blocked_hand_over_is_abandoned_when_the_flow_is_suspended():
    consumer, queue = Consumer(), asyncio.Queue(maxsize=1)
    queue.put_nowait("earlier")
    seen = []

    async def callback(message):
        try:
            await queue.put(message)
        except asyncio.CancelledError:
            seen.append("cancelled inside the callback")
            raise

    handing = asyncio.ensure_future(faust_drain.hand_over(consumer, callback, "record"))
    await asyncio.sleep(0.01)
    consumer.suspend_flow.set()
    await asyncio.wait_for(handing, 1)
    await asyncio.sleep(0)
    assert seen == ["cancelled inside the callback"]
    assert queue.qsize() == 1 and queue.get_nowait() == "earlier"


async def test_a_suspended_flow_takes_faust_s_path():
    consumer, queue = Consumer(), asyncio.Queue()
    consumer.suspend_flow.set()
    await faust_drain.hand_over(consumer, queue.put, "record")
    assert consumer.races == 1


async def test_an_error_in_the_first_step_propagates():
    async def broken(message):
        raise ValueError(message)

    with pytest.raises(ValueError, match="record"):
        await faust_drain.hand_over(Consumer(), broken, "record")


async def test_finish_passes_results_errors_and_bare_yields_like_a_task():
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()

    async def work():
        a = await first
        await asyncio.sleep(0)  # a bare yield
        try:
            await second
        except KeyError as exc:
            return (a, exc.args[0])

    coro = work()
    waiting_on = coro.send(None)
    assert waiting_on is first
    finishing = asyncio.ensure_future(faust_drain.finish(coro, waiting_on))
    first.set_result(1)
    await asyncio.sleep(0.01)
    second.set_exception(KeyError("k"))
    assert await asyncio.wait_for(finishing, 1) == (1, "k")


async def test_cancelling_finish_cancels_what_the_coroutine_waits_on():
    loop = asyncio.get_running_loop()
    waited = loop.create_future()
    cleaned = []

    async def work():
        try:
            await waited
        finally:
            cleaned.append(True)

    coro = work()
    finishing = asyncio.ensure_future(faust_drain.finish(coro, coro.send(None)))
    await asyncio.sleep(0)
    finishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await finishing
    assert waited.cancelled() and cleaned == [True]


def test_installs_on_the_pinned_faust():
    from faust.transport.consumer import Consumer as FaustConsumer

    assert faust_drain.install() is True
    assert FaustConsumer._drain_messages is faust_drain._drain_messages
