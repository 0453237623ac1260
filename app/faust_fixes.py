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
tolerates: deliveries are de-duplicated by the ledger), never lose them.
"""

from __future__ import annotations

import asyncio
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
            consumer.resume_partitions(
                {tp for tp in assignment if not self._is_changelog_tp(tp)})
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(),
                             timeout=app.conf.broker_request_timeout)
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
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
        if assignment:
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(),
                             timeout=app.conf.broker_request_timeout)
        self.completed.set()
        consumer.resume_flow()
        await app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")

    cls._resume_streams = _resume_streams
    cls.on_recovery_completed = on_recovery_completed
    cls._relay_resume_order_fix = True
