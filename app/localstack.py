"""The pieces `relay run`, the tests and the benchmark assemble on one machine: worker processes,
a producer that remembers where each record landed, and a reader of `relay.outcomes`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson

from app.broker import free_port


class WorkerProcess:
    """`python -m app worker` as a child process with its own web port and data directory."""

    def __init__(self, env: Mapping[str, str], data_dir: str, web_port: int | None = None,
                 log_path: str | None = None):
        self.web_port = web_port or free_port()
        self.data_dir = data_dir
        self.log_path = log_path or str(Path(data_dir) / "worker.log")
        self.env = {**env, "WEB_PORT": str(self.web_port), "DATA_DIR": data_dir}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> WorkerProcess:
        Path(self.data_dir).mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "worker"], env=self.env, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        return self

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc and self.proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {self.proc.returncode}; "
                                       f"see {self.log_path}")
                try:
                    reply = await client.get(f"{self.url}/readyz")
                    if reply.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.25)
        raise TimeoutError(f"worker not ready after {timeout_s:.0f}s; see {self.log_path}")

    def dump_tasks(self) -> bool:
        """SIGUSR2: the worker logs every asyncio task's stack (app.diagnostics)."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGUSR2)
            return True
        return False

    def kill(self) -> None:
        """SIGKILL: the crash the delivery guarantees must survive."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM for a clean shutdown, SIGKILL if it hangs."""
        if not self.proc or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        except ProcessLookupError:
            pass


async def produce(bootstrap: str | list[str],
                  records: Iterable[tuple[str, bytes | None, bytes]],
                  headers: list[tuple[str, bytes]] | None = None) -> list[str]:
    """Send records and return their origins (`topic/partition/offset`) in order."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                max_batch_size=256 * 1024)
    try:
        await producer.start()
        futures = [await producer.send(topic, value=value, key=key, headers=headers)
                   for topic, key, value in records]
        metas = await asyncio.gather(*futures)
        return [f"{m.topic}/{m.partition}/{m.offset}" for m in metas]
    finally:
        await producer.stop()


async def read_topic(bootstrap: str | list[str], topics: list[str],
                     stop: asyncio.Event | None = None,
                     idle_timeout_s: float | None = None) -> AsyncIterator[tuple[str, Any]]:
    """Yield (topic, parsed value) from the beginning of `topics` until `stop` is set or the
    topics stay quiet for `idle_timeout_s`; each item of a bundle (app.bundles) on its own."""
    from app.bundles import docs

    async for topic, _key, value in read_raw(bootstrap, topics, idle_timeout_s, stop,
                                             only_existing=False):
        try:
            for doc in docs(value):
                yield topic, doc
        except orjson.JSONDecodeError:
            yield topic, None


# How long a reader may take to get its partitions before its idle time starts anyway (a topic
# that never gets partitions must not make it wait forever).
READ_SETUP_LIMIT_S = 30.0


async def read_raw(bootstrap: str | list[str], topics: list[str],
                   idle_timeout_s: float | None, stop: asyncio.Event | None = None,
                   only_existing: bool = True
                   ) -> AsyncIterator[tuple[str, bytes | None, bytes | None]]:
    """Yield (topic, key bytes, value bytes) from the beginning of `topics` until `stop` is set
    or they stay quiet for `idle_timeout_s`. With `only_existing`, missing topics are skipped
    rather than subscribed to, so reading never auto-creates one (e.g. a table changelog the
    worker will create with its own partition count)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                metadata_max_age_ms=2000)
    try:
        await consumer.start()
        if only_existing:
            known = await consumer.topics()
            topics = [t for t in topics if t in known]
            if not topics:
                return
        consumer.subscribe(topics)
        quiet_since = time.monotonic()
        setup_until = quiet_since + READ_SETUP_LIMIT_S
        while not (stop and stop.is_set()):
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            if not batches:
                if not consumer.assignment() and time.monotonic() < setup_until:
                    # Still setting up (metadata, then partitions): that is not quiet, and on a
                    # loaded machine it can outlast the idle time and read nothing at all.
                    quiet_since = time.monotonic()
                elif idle_timeout_s is not None and time.monotonic() - quiet_since > idle_timeout_s:
                    return
                continue
            quiet_since = time.monotonic()
            for tp, messages in batches.items():
                for message in messages:
                    yield tp.topic, message.key, message.value
    finally:
        await consumer.stop()


class TopicPublisher:
    """An async callable publishing one JSON document per call to `topic`: the sandbox's
    `air_outbound` hook, so the AIR emulator's outbound events reach `air.outbound` as real AIR's
    would. The producer starts on first use, on the caller's event loop (the sandbox's)."""

    def __init__(self, bootstrap: str | list[str], topic: str,
                 key: Callable[[Mapping[str, Any]], str | None] | None = None):
        self.bootstrap, self.topic, self.key = bootstrap, topic, key
        self.sent = 0
        self._producer = None
        self._lock: asyncio.Lock | None = None

    async def __call__(self, doc: Mapping[str, Any]) -> None:
        from aiokafka import AIOKafkaProducer

        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()  # else it is collected open, and aiokafka logs that
                    raise
                self._producer = producer
        key = self.key(doc) if self.key else None
        await self._producer.send_and_wait(self.topic, orjson.dumps(doc),
                                           key=key.encode() if key else None)
        self.sent += 1

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()


def air_event_key(doc: Mapping[str, Any]) -> str | None:
    """The wallet id of an AIR outbound document (its `walletEntity_<id>` enrichment key), so one
    wallet's events stay in order on one partition."""
    enrichment = doc.get("enrichmentData")
    if isinstance(enrichment, Mapping):
        for name in enrichment:
            if str(name).startswith("walletEntity_"):
                return str(name).split("_", 1)[1]
    return None


def base_env(broker_url: str, sandbox_env: Mapping[str, str] | None = None,
             **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(sandbox_env or {})
    env.update({"BROKER_URL": broker_url, "BROKER_FLAVOR": "tansu", "PYTHONUNBUFFERED": "1"})
    if sandbox_env:
        env["RELAY_TRACE_IDS"] = "1"
    env.update(extra)
    return env
