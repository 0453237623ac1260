"""A cheaper hand-over of each fetched record from Faust's consumer to its stream queues.

Faust's `Consumer._drain_messages` hands every record to the conductor with
`await self.wait_first(callback(message), self.suspend_flow.wait())`, so that a hand-over stuck
on a full stream queue is abandoned when a rebalance suspends the flow. `wait_first` makes four
tasks, an `asyncio.wait` and three cancellations for every record: ~117 us of CPU on this
machine against ~0.3 us for the hand-over itself, paid on every hop of every event.

Almost always the hand-over cannot block: the queues have room and the flow runs. So the record
is handed over by running the callback's coroutine one step by hand: if it finishes in that step,
nothing was waited for and nothing needs racing. Only a hand-over that has to wait (a full queue,
a suspended flow) is raced against the flow suspension, exactly as Faust does: `finish` drives
the already-started coroutine on in a task, with the same result, exception and cancellation
behaviour as if it had been a task from the start.

`_drain_messages` below is faust-streaming 0.15.3's loop (`faust/transport/consumer.py`) with
its `getmany` folded in, so that the records of batch topics (`app.batches`) go to their agents
a fetch at a time before the rest goes on record by record, and with that hand-over line
changed; the copy is installed only on the version it was taken from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from importlib.metadata import version
from typing import Any

import structlog

log = structlog.get_logger(__name__)

COPIED_FROM = "0.15.3"


async def finish(coro: Coroutine, waiting_on: Any) -> Any:
    """Drive `coro`, already started by hand and now waiting on `waiting_on`, to its end, the
    way an asyncio Task would have: results and exceptions of what it waits on are passed in,
    and cancelling this task cancels what it waits on and raises CancelledError inside it."""
    while True:
        try:
            if waiting_on is None:  # a bare yield (asyncio.sleep(0)): give the loop one turn
                await asyncio.sleep(0)
            else:
                # A future yielded to a task is marked blocking; the task clears the mark before
                # waiting on it, and awaiting it again requires that.
                waiting_on._asyncio_future_blocking = False
                await waiting_on
        except BaseException as exc:
            try:
                waiting_on = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            waiting_on = coro.send(None)
        except StopIteration as stop:
            return stop.value


async def hand_over(consumer: Any, callback: Callable[[Any], Awaitable[Any]], message: Any) -> None:
    """`callback(message)` raced against a flow suspension, without the race when it is not
    needed (the coroutine finishes without waiting)."""
    if not consumer.suspend_flow.is_set():
        coro = callback(message)
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            return
        await consumer.wait_first(finish(coro, waiting_on), consumer.suspend_flow.wait())
        return
    await consumer.wait_first(callback(message), consumer.suspend_flow.wait())


async def _drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover - Faust's loop
    """Faust's fetch loop with its `getmany` folded in, so that the records of batch topics
    (`app.batches`) go to their agents a fetch at a time before the rest goes on record by
    record; and with the cheaper hand-over above."""
    from faust.transport.consumer import CONSUMER_FETCHING

    callback = self.callback
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set

    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    batch_agents = getattr(self.app, "batch_agents", None)

    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep

    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            records, active_partitions = await self._wait_next_records(1.0)
            generation_id = self.app.consumer_generation_id

            # Sleeping because sometimes getmany is called in a loop
            # never releasing to the event loop
            await self.sleep(0)
            if records is None or self.should_stop:
                unset_flag(flag_consumer_fetching)
                continue
            if not self.flow_active:
                self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
                try:
                    await self.perform_seek()
                except Exception as ex:
                    self.log.warning(f"exception performing seek when flow not active {ex}")
                unset_flag(flag_consumer_fetching)
                continue
            if batch_agents is not None and records:
                records = await batch_agents.take(self, records, active_partitions, generation_id)
                await sleep(0)
            for tp, record in self.scheduler.iterate(records):
                if not self.flow_active or self.app.consumer_generation_id != generation_id:
                    break
                if not (active_partitions is None or tp in active_partitions
                        or tp in self._buffered_partitions):
                    continue
                self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                message = self._to_message(tp, record)
                num_since_yield += 1
                if num_since_yield > yield_every:
                    await sleep(0)
                    num_since_yield = 0

                offset = message.offset
                r_offset = get_read_offset(tp)
                if r_offset is None or offset >= r_offset:
                    gap = offset - (r_offset or 0)
                    # We have a gap in income messages
                    if gap > 1 and r_offset:
                        acks_enabled = acks_enabled_for(message.topic)
                        if acks_enabled:
                            await self._add_gap(tp, r_offset + 1, offset)
                    if commit_every is not None:
                        if self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                    await hand_over(self, callback, message)
                    set_read_offset(tp, offset)
                else:
                    self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                 offset, message.key, message.value)
            if commit_every is not None and self._n_acked >= commit_every:
                self._n_acked = 0
                await self.commit()
            unset_flag(flag_consumer_fetching)

    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(flag_consumer_fetching)


def install() -> bool:
    """Use the cheaper hand-over on this Faust, if it is the version the loop was copied from."""
    from faust.transport.consumer import Consumer

    if getattr(Consumer, "_relay_drain", False):
        return True
    installed = version("faust-streaming")
    if installed != COPIED_FROM:
        log.warning("faust_drain.not_installed", faust=installed, copied_from=COPIED_FROM)
        return False
    Consumer._drain_messages = _drain_messages
    Consumer._relay_drain = True
    return True
