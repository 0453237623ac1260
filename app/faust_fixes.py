"""A fix for a Faust race that silently drops records after every rebalance.

When a rebalance completes, Faust's `Recovery.on_recovery_completed` (and `_resume_streams`, when
no table needed restoring) resumes the stream partitions,
seeks them to their committed offsets, and only then resumes flow control. Resuming flow control
empties every stream queue. A record the fetcher delivered between the seek and that moment is
thrown away, yet its read offset has already advanced: it is never processed, never acknowledged,
and the partition's committed offset stays behind it for the rest of the process's life (Faust's
"Has not committed ... at all since worker start" warning). Seen after a worker restart in
`relay chaos`: three lookups on `identity.claims` skipped, the events behind them never routed.

The fix resumes flow control first and seeks afterwards, so anything fetched before the seek is
fetched again from the committed offset: the window can only repeat records (which every stage
tolerates: deliveries are de-duplicated by the ledger), never lose them. That guarantee needs
the seek to cover every stream partition, including one never committed, which aiokafka's seek
skips (`seek_to_committed` below).

The stream partitions are resumed only after the seek. Faust resumes them first, while the
flow is still on from reading the changelogs, so what the fetcher returned during the seek was
processed, then fetched again from the committed offset and processed twice: a worker started
on a pre-loaded backlog normalized all of it twice in 4 of 15 `relay bench` runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any


def install_resume_order_fix() -> None:
    from faust.tables import recovery

    cls = recovery.Recovery
    if getattr(cls, "_relay_resume_order_fix", False):
        return

    async def _resume_streams(self: Any, generation_id: int = 0) -> None:
        app = self.app
        consumer = app.consumer
        await app.on_rebalance_complete.send()
        assignment = consumer.assignment()
        if app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again")
            return
        app.flow_control.resume()  # empties the stream queues: before the seek, not after
        if assignment:
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(),
                             timeout=app.conf.broker_request_timeout)
            resume_stream_partitions(self, consumer, assignment)
        else:
            self.log.info("Resuming streams with empty assignment")
        self.completed.set()
        self.log.info("Resuming flow...")
        consumer.resume_flow()
        await app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")

    async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
        app = self.app
        consumer = app.consumer
        self.log.info("Restore complete!")
        await app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callbacks = [asyncio.ensure_future(table.on_recovery_completed(
            self.actives_for_table[table], self.standbys_for_table[table]))
            for table in self.tables.values()]
        if callbacks:
            await asyncio.wait(callbacks)
        assignment = consumer.assignment()
        if app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again")
            return
        app.flow_control.resume()  # empties the stream queues: before the seek, not after
        if assignment:
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(),
                             timeout=app.conf.broker_request_timeout)
        resume_stream_partitions(self, consumer, assignment)
        self.completed.set()
        consumer.resume_flow()
        await app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")

    def resume_stream_partitions(recovery: Any, consumer: Any, assignment: Any) -> None:
        """After the seek, not before: the flow is still on from reading the changelogs, so a
        stream partition resumed before the seek is fetched from where it stood and processed,
        and the seek then hands the same records over again (a worker started on a backlog
        normalized it twice, 4 runs in 15 of `relay bench`)."""
        consumer.resume_partitions({tp for tp in assignment if not recovery._is_changelog_tp(tp)})

    cls._resume_streams = _resume_streams
    cls.on_recovery_completed = on_recovery_completed
    cls._relay_resume_order_fix = True


async def seek_to_committed(client: Any, skip_topics: Collection[str],
                            reset: str = "earliest") -> dict[Any, int | None]:
    """Move every assigned partition back to its committed offset, including the partitions
    that have none yet: those go where the reset policy says, as on a fresh start.

    aiokafka's `seek_to_committed` leaves a partition without a committed offset (or with
    offset 0) wherever its fetch position happens to be. Faust relies on this seek to take back
    the records it fetched but discarded while a partition was paused: after a restart, while
    recovery has paused every stream partition, one fetch with nothing active returns every
    partition's records (aiokafka reads an empty partition set as "all") and Faust throws the
    stream partitions' records away. A partition its previous worker never committed then sat
    past those records for the life of the process (seen in test_crash_in_flight: the Braze
    deliveries of the killed worker never read again). `skip_topics` (table changelogs) are
    positioned by recovery itself."""
    committed = await client.seek_to_committed()
    streams = {tp: offset for tp, offset in committed.items() if tp.topic not in skip_topics}
    for tp in (tp for tp, offset in streams.items() if offset == 0):
        client.seek(tp, 0)
    if never := [tp for tp, offset in streams.items() if offset is None]:
        await (client.seek_to_end if reset == "latest" else client.seek_to_beginning)(*never)
    return committed


def install_never_committed_seek_fix() -> None:
    """Faust's stream-partition seek (`perform_seek`) through `seek_to_committed` above."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    cls = AIOKafkaConsumerThread
    if getattr(cls, "_relay_never_committed_seek_fix", False):
        return

    async def seek_committed(self: Any) -> dict[Any, int | None]:
        return await self.call_thread(
            seek_to_committed, self._ensure_consumer(), self.app.tables.changelog_topics,
            self.app.conf.consumer_auto_offset_reset)

    cls.seek_to_committed = seek_committed
    cls._relay_never_committed_seek_fix = True


def aiokafka_client(consumer: Any) -> Any:
    """The aiokafka consumer behind Faust's `consumer`, or None before it has started."""
    return getattr(consumer._thread, "_consumer", None)


def install_client_pause() -> None:
    """Pause and resume partitions in aiokafka too, not only in Faust's own bookkeeping.

    Faust pauses a partition by leaving it out of the set it asks aiokafka for records from;
    aiokafka goes on fetching it. So every fetch named the table changelogs (21 of a worker's
    117 partitions, read only during recovery) and, during recovery, every stream partition,
    whose records Faust then discarded and had to seek back to. Paused in aiokafka, they are
    left out of the fetch: less to encode, decode and scan, for the worker and the broker."""
    from faust.transport.drivers.aiokafka import Consumer, ensure_aiokafka_TPset

    if getattr(Consumer, "_relay_client_pause", False):
        return

    def mirrored(faust_method: Any, client_method: str) -> Any:
        def method(self: Any, tps: Any) -> None:
            tps = list(tps)
            faust_method(self, tps)
            if (client := aiokafka_client(self)) is not None:
                # Faust also pauses and resumes partitions a rebalance just took away.
                if mine := ensure_aiokafka_TPset(tps) & client.assignment():
                    getattr(client, client_method)(*mine)
        return method

    Consumer.pause_partitions = mirrored(Consumer.pause_partitions, "pause")
    Consumer.resume_partitions = mirrored(Consumer.resume_partitions, "resume")
    Consumer._relay_client_pause = True


def install_changelog_livelock_fix() -> None:
    """Leave the table changelogs out of Faust's livelock check (`verify_event_path`).

    The check logs an ERROR for an assigned partition that aiokafka has not fetched for
    `stream_processing_timeout`. Paused in aiokafka (`install_client_pause`), the changelogs are
    fetched during recovery only, and never at all when they were empty: every worker then
    logged one ERROR per changelog partition (20) every 2.5 s from 300 s after its start.
    Recovery checks the changelogs it reads itself (`verify_recovery_event_path`)."""
    from faust.transport.drivers.aiokafka import Consumer

    if getattr(Consumer, "_relay_changelog_livelock_fix", False):
        return
    verify = Consumer.verify_event_path

    def verify_event_path(self: Any, now: float, tp: Any) -> None:
        if tp.topic in self.app.tables.changelog_topics:
            return None
        return verify(self, now, tp)

    Consumer.verify_event_path = verify_event_path
    Consumer._relay_changelog_livelock_fix = True


def install_complete_flush_fix() -> None:
    """Make Faust's commit wait for every buffered table write, not just 0.1 s per write.

    Table writes (changelog records) wait in `ProducerBuffer` until its task hands them to the
    producer. Before committing offsets Faust flushes that buffer, but `flush()` gives up as soon
    as one hand-over takes longer than 0.1 s, which happens exactly when the producer is busy
    ("producer buffer full"). Offsets could then be committed ahead of the ledger, index and
    retry-lane writes of the events they cover, and a crash would forget those writes. The fixed
    flush returns only when the buffer is empty and nothing is half-way to the producer."""
    from faust.transport.producer import ProducerBuffer

    if getattr(ProducerBuffer, "_relay_complete_flush_fix", False):
        return
    send_pending = ProducerBuffer._send_pending

    async def _send_pending(self: Any, fut: Any) -> None:
        self._relay_in_flight = getattr(self, "_relay_in_flight", 0) + 1
        try:
            await send_pending(self, fut)
        finally:
            self._relay_in_flight -= 1
            if not self._relay_in_flight and not self.size:
                _drained(self).set()

    async def flush(self: Any) -> None:
        # One wake-up when the buffer is empty, not one per record handed over: waiting on
        # every hand-over cost a task and a timer per table write (~5 % of the worker's CPU).
        drained = _drained(self)
        while self.size or getattr(self, "_relay_in_flight", 0):
            if self.state != "running" and self.size:
                raise RuntimeError("Cannot flush: Producer not Running")
            drained.clear()
            try:
                await asyncio.wait_for(drained.wait(), timeout=0.1)
            except asyncio.TimeoutError:
                continue

    def _drained(buffer: Any) -> asyncio.Event:
        if (event := getattr(buffer, "_relay_drained", None)) is None:
            event = buffer._relay_drained = asyncio.Event()
        return event

    ProducerBuffer._send_pending = _send_pending
    ProducerBuffer.flush = flush
    ProducerBuffer._relay_complete_flush_fix = True


def install_fetch_wait(max_wait_ms: int) -> None:
    """Cap how long the worker's fetch requests wait for data (Faust hard-codes 1,500 ms).

    Every stage hop is a fetch, and one fetch covers all of a worker's idle partitions. Tansu
    does not answer a waiting fetch when records arrive: it looks again after half the
    remaining wait (measured: at 250 and 375 ms of a 500 ms wait). So with Faust's 1.5 s, an
    event waited about 0.75 s per hop (p50 over a second across the stages at half load), and
    a stage whose only buffered input was being processed stalled. Kafka answers early, so a
    short wait only costs more empty fetches while idle; on Tansu each of those also costs
    the broker CPU."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    cls = AIOKafkaConsumerThread
    create = getattr(cls, "_relay_create_worker_consumer", None) or cls._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = max_wait_ms  # read by the fetcher at start()
        return consumer

    cls._relay_create_worker_consumer = create
    cls._create_worker_consumer = _create_worker_consumer
