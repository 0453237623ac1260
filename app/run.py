"""`relay run`: the whole relay on one machine, with a live view of what flowed where.

Starts the embedded broker when BROKER_URL is unset and the sandbox when destinations have no
credentials, creates the catalog's topics, starts a worker process, sends sample traffic and
follows `relay.outcomes` until every record is accounted for. `kill -USR2 <pid>` logs every
asyncio task's stack (app.diagnostics), as it does for a worker.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections import deque
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

from app.accounting import Tracker
from app.broker import EmbeddedBroker
from app.catalog import bootstrap_of, create_topics, load_catalog
from app.config import Settings
from app.localstack import (
    TopicPublisher,
    WorkerProcess,
    air_event_key,
    base_env,
    produce,
    read_topic,
)
from app.samples import sample_records

console = Console(stderr=True)


class Ops:
    """What the live view reads from the worker's /metrics: lag, retry-topic depth, DLQ, and the
    ingress rate (records accounted at ingress per second over the last few samples)."""

    def __init__(self, url: str | None = None):
        self.url = url
        self.lag_messages = 0
        self.lag_seconds = 0.0
        self.in_retry: dict[str, int] = {}
        self.dlq: dict[str, int] = {}
        self._samples: deque[tuple[float, int]] = deque(maxlen=20)

    def rate(self, tracker: Tracker) -> float:
        now, seen = time.monotonic(), len(tracker.ingress)
        self._samples.append((now, seen))
        (t0, n0) = self._samples[0]
        return (seen - n0) / (now - t0) if now > t0 else 0.0

    async def poll(self) -> None:
        if not self.url:
            return
        try:
            async with httpx.AsyncClient(timeout=1.0) as client:
                text = (await client.get(f"{self.url}/metrics")).text
        except httpx.HTTPError:
            return
        self.update(text)

    def update(self, text: str) -> None:
        lag, lag_s, in_retry, dlq = 0, 0.0, {}, {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if sample.name == "relay_consumer_lag_messages":
                    lag += int(sample.value)
                elif sample.name == "relay_consumer_lag_seconds":
                    lag_s = max(lag_s, sample.value)
                elif sample.name == "relay_retry_topic_depth_messages":
                    in_retry[labels["destination"]] = int(sample.value)
                elif sample.name == "relay_delivery_dead_letters_total":
                    dest = labels["destination"]
                    dlq[dest] = dlq.get(dest, 0) + int(sample.value)
        self.lag_messages, self.lag_seconds, self.in_retry, self.dlq = lag, lag_s, in_retry, dlq


def render(tracker: Tracker, sent: int, started: float, ops: Ops | None = None) -> Table:
    """The live view: one compact table that `rich.live.Live` redraws in place."""
    ops = ops or Ops()
    elapsed = max(time.monotonic() - started, 1e-6)
    accounted = len(tracker.expected) - len(tracker.unaccounted())
    table = Table(title=f"loyalty relay · {ops.rate(tracker):.0f} events/s in · "
                        f"{accounted}/{sent} accounted · {elapsed:.1f}s · "
                        f"lag {ops.lag_messages} msgs / {ops.lag_seconds:.1f}s · "
                        f"ingress DLQ {tracker.ingress_dlq}")
    for column in ("destination", "sent", "delivered", "failed", "in_retry", "dlq", "skipped",
                   "held", "in_flight"):
        table.add_column(column, justify="left" if column == "destination" else "right")
    for row in tracker.summary_rows():
        dest = row["destination"]
        table.add_row(dest, str(row["sent"]), str(row["delivered"]),
                      str(row["dead_lettered"] + row["unreachable"]),
                      str(ops.in_retry.get(dest, 0)), str(ops.dlq.get(dest, row["dead_lettered"])),
                      str(row["skipped"]), str(row["suppressed"] + row["deferred"]),
                      str(row["in_flight"]))
    return table


async def run_local(settings: Settings, events: int | None, rate: float, timeout_s: float | None,
                    live: bool = True) -> int:
    """Returns the process exit code: 0 when every sent record is accounted for."""
    from app.diagnostics import install_task_dump

    install_task_dump()
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
            # The AIR emulator's outbound SERVICE.TRIGGER events go to air.outbound, as AIR's do.
            air_outbound = TopicPublisher(bootstrap, "air.outbound", key=air_event_key)
            stack.push_async_callback(air_outbound.stop)
            sandbox = Sandbox(webhook_url=f"http://127.0.0.1:{web_port}/webhooks/maac",
                              air_outbound=air_outbound)
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
        ops, polled = Ops(worker.url), 0.0
        with Live(render(tracker, len(tracker.expected), started, ops), console=console,
                  refresh_per_second=4, auto_refresh=live) as view:
            while True:
                await asyncio.sleep(0.25)
                if time.monotonic() - polled > 1.0:
                    await ops.poll()
                    polled = time.monotonic()
                view.update(render(tracker, len(tracker.expected), started, ops))
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
    out = Console(width=max(Console().width, 120))  # pipes get 80 columns: names would be cut
    table = Table(title="per-destination summary")
    columns = ("destination", "sent", "delivered", "skipped", "unreachable", "dead_lettered",
               "suppressed", "deferred", "retried", "in_flight")
    for column in columns:
        table.add_column(column, no_wrap=True)
    for row in tracker.summary_rows():
        table.add_row(*(str(row[c]) for c in columns))
    out.print(table)
    out.print(f"records: {len(tracker.expected)}  ingress dead letters: {tracker.ingress_dlq}  "
              f"unaccounted: {len(missing)}")
    if missing:
        out.print(f"first unaccounted: {', '.join(missing[:5])}")
