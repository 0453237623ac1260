"""`relay run`: the whole relay on one machine, with a live view of what flowed where.

Starts the embedded broker when BROKER_URL is unset and the sandbox when destinations have no
credentials, creates the catalog's topics, starts a worker process, sends sample traffic and
follows `relay.outcomes` until every record is accounted for.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime

from rich.console import Console
from rich.live import Live
from rich.table import Table

from app.accounting import Tracker
from app.broker import EmbeddedBroker
from app.catalog import bootstrap_of, create_topics, load_catalog
from app.config import Settings
from app.localstack import WorkerProcess, base_env, produce, read_topic
from app.samples import sample_records

console = Console(stderr=True)


def render(tracker: Tracker, sent: int, started: float) -> Table:
    elapsed = max(time.monotonic() - started, 1e-6)
    accounted = len(tracker.expected) - len(tracker.unaccounted())
    table = Table(title=f"loyalty relay · {accounted}/{sent} records accounted for · "
                        f"{elapsed:.1f}s · ingress dead letters {tracker.ingress_dlq}")
    for column in ("destination", "sent", "delivered", "skipped", "unreachable",
                   "dead_lettered", "retried", "in_flight"):
        table.add_column(column, justify="left" if column == "destination" else "right")
    for row in tracker.summary_rows():
        table.add_row(*(str(row[c]) for c in row))
    return table


async def run_local(settings: Settings, events: int | None, rate: float, timeout_s: float | None,
                    live: bool = True) -> int:
    """Returns the process exit code: 0 when every sent record is accounted for."""
    async with AsyncExitStack() as stack:
        broker_url = settings.broker_url
        workdir = tempfile.mkdtemp(prefix="relay-run-")
        if not broker_url:
            broker = EmbeddedBroker(log_path=os.path.join(workdir, "broker.log"))
            await asyncio.to_thread(broker.start)
            stack.callback(broker.stop)
            broker_url = broker.url
        bootstrap = bootstrap_of(broker_url)
        await create_topics(bootstrap, load_catalog(settings))

        sandbox_env = None
        web_port = settings.web_port
        if not any(settings.destination(d).configured for d in settings.destinations):
            from app.broker import free_port
            from app.sandbox import Sandbox

            web_port = free_port()
            sandbox = Sandbox(webhook_url=f"http://127.0.0.1:{web_port}/webhooks/maac")
            await sandbox.start()
            stack.push_async_callback(sandbox.stop)
            sandbox_env = sandbox.credentials()
            console.print(f"sandbox on {sandbox.url}")
        worker = WorkerProcess(base_env(broker_url, sandbox_env), os.path.join(workdir, "w1"),
                               web_port=web_port)
        worker.start()
        stack.callback(worker.stop)
        console.print(f"worker on {worker.url} (logs: {worker.log_path})")
        await worker.wait_ready()

        tracker = Tracker()
        total = events if events is not None else 10**9
        rate = rate or (0.0 if events is not None else 50.0)  # a demo pace when running forever
        started = time.monotonic()
        stop = asyncio.Event()

        async def follow() -> None:
            async for _topic, record in read_topic(bootstrap, ["relay.outcomes"], stop):
                if record:
                    tracker.add(record)

        async def feed() -> None:
            sent, batch = 0, max(1, int(rate)) if rate else 500
            while sent < total:
                n = min(batch, total - sent)
                origins = await produce(bootstrap, sample_records(
                    n, seed=sent, base_time=datetime.now(UTC)))
                tracker.expect(origins)
                sent += n
                if rate:
                    await asyncio.sleep(n / rate)

        follower = asyncio.create_task(follow())
        feeder = asyncio.create_task(feed())
        deadline = None
        with Live(render(tracker, len(tracker.expected), started), console=console,
                  refresh_per_second=4, auto_refresh=live) as view:
            while True:
                await asyncio.sleep(0.25)
                view.update(render(tracker, len(tracker.expected), started))
                if not feeder.done():
                    continue
                feeder.result()
                deadline = deadline or time.monotonic() + (timeout_s or 60 + total / 20)
                if tracker.done or time.monotonic() > deadline:
                    break
        stop.set()
        await follower
        missing = tracker.unaccounted()
        print_summary(tracker, missing)
        return 0 if not missing else 1


def print_summary(tracker: Tracker, missing: list[str]) -> None:
    out = Console()
    table = Table(title="per-destination summary")
    for column in ("destination", "sent", "delivered", "skipped", "unreachable", "dead_lettered",
                   "retried", "in_flight"):
        table.add_column(column)
    for row in tracker.summary_rows():
        table.add_row(*(str(v) for v in row.values()))
    out.print(table)
    out.print(f"records: {len(tracker.expected)}  ingress dead letters: {tracker.ingress_dlq}  "
              f"unaccounted: {len(missing)}")
    if missing:
        out.print(f"first unaccounted: {', '.join(missing[:5])}")
