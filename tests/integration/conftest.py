"""Real parts for integration tests: the embedded broker, the sandbox over real HTTP on
127.0.0.1, and relay workers as real processes. Nothing is mocked."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from app.broker import EmbeddedBroker, free_port, record_counts
from app.catalog import bootstrap_of, create_topics, load_catalog
from app.config import TOPICS_DIR, load_settings
from app.localstack import TopicPublisher, WorkerProcess, air_event_key, base_env
from app.safety.policy import without_quiet_hours

pytestmark = pytest.mark.integration


class SandboxThread:
    """The sandbox on its own event loop in a thread, so any test (sync or async) can use it."""

    def __init__(self, **kwargs):
        from app.sandbox import Sandbox

        self.loop = asyncio.new_event_loop()
        self.sandbox = Sandbox(**kwargs)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> SandboxThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.sandbox.start(), self.loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sandbox.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    @property
    def url(self) -> str:
        return self.sandbox.url

    def credentials(self) -> dict[str, str]:
        return self.sandbox.credentials()

    def calls(self, destination: str | None = None) -> list[dict]:
        params = {"destination": destination} if destination else {}
        return httpx.get(f"{self.url}/_sandbox/calls", params=params, timeout=10).json()

    def faults(self, **spec) -> None:
        httpx.post(f"{self.url}/_sandbox/faults", json=spec, timeout=10).raise_for_status()

    def ids(self) -> dict[str, int]:
        """Delivery id -> times a destination accepted it."""
        return httpx.get(f"{self.url}/_sandbox/ids", timeout=10).json()

    def clear_faults(self) -> None:
        httpx.delete(f"{self.url}/_sandbox/faults", timeout=10).raise_for_status()

    def reset(self) -> None:
        httpx.delete(f"{self.url}/_sandbox/calls", timeout=10)
        httpx.delete(f"{self.url}/_sandbox/faults", timeout=10)


# Workers started by `start_worker` in this process: a wait that times out reports what each
# one's consumer was doing, since a CI failure can rarely be re-run under a debugger.
STARTED_WORKERS: list[WorkerProcess] = []


def wait_until(predicate, timeout_s: float = 60.0, interval_s: float = 0.25, what: str = ""):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what or predicate}"
                         f"{worker_states()}{broker_record_counts()}")


def worker_states() -> str:
    """The consumer state (app.agents.ops.consumer_state) each live worker logs on SIGUSR2, and
    the last lines it logged before."""
    dumped = [proc for proc in STARTED_WORKERS if proc.dump_tasks()]
    time.sleep(1.5 if dumped else 0)
    lines = []
    for proc in dumped:
        log = Path(proc.log_path).read_text(errors="replace").splitlines()
        states = state_lines(log)
        lines.append(f"\n  worker {proc.web_port}: {states[-1] if states else 'no state logged'}")
        lines.extend(f"\n    {line[:300]}" for line in
                     [line for line in log if '"diagnostics.' not in line][-10:])
    return "".join(lines)


def state_lines(log: list[str]) -> list[str]:
    """The consumer states (app.agents.ops.consumer_state) among a worker's log lines."""
    return [line for line in log if '"diagnostics.state"' in line]


def logged_state(worker) -> dict:
    """The consumer state `worker` logs when asked now."""
    def states() -> list[str]:
        return state_lines(Path(worker.log_path).read_text(errors="replace").splitlines())
    before = len(states())
    assert worker.dump_tasks(), "the worker is not running"
    wait_until(lambda: len(states()) > before, 30, what="the consumer state logged")
    line = states()[before]
    return orjson.loads(line[line.index("{"):])


def broker_record_counts() -> str:
    """The records held by every non-empty topic on the live workers' broker: with the workers'
    states, it shows how far along the stages a stalled record got."""
    urls = {proc.env.get("BROKER_URL") for proc in STARTED_WORKERS if proc.proc
            and proc.proc.poll() is None} - {None}
    if not urls:
        return ""
    try:
        counts = asyncio.run(asyncio.wait_for(record_counts(bootstrap_of(urls.pop())), 20))
    except Exception as exc:  # a diagnostic must not hide the assertion it decorates
        return f"\n  broker records per topic: unavailable ({type(exc).__name__})"
    return "\n  broker records per topic: " + ", ".join(
        f"{t} {n}" for t, n in sorted(counts.items()) if n)


def policy_file(tmp_path_factory, edit) -> str:
    """The shipped topics/messaging.yaml changed by `edit(doc)`, as a file for MESSAGING_FILE."""
    doc = yaml.safe_load((TOPICS_DIR / "messaging.yaml").read_text())
    edit(doc)
    path = tmp_path_factory.mktemp("policy") / "messaging.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=str(log)) as b:
        settings = load_settings({**os.environ, "BROKER_URL": b.url})
        asyncio.run(create_topics(b.bootstrap, load_catalog(settings)))
        yield b


@pytest.fixture(scope="module")
def worker_port():
    return free_port()


@pytest.fixture(scope="module")
def sandbox(broker, worker_port):
    # The AIR emulator publishes its outbound events to air.outbound, closing the AIR loop.
    air_outbound = TopicPublisher(broker.bootstrap, "air.outbound", key=air_event_key)
    box = SandboxThread(webhook_url=f"http://127.0.0.1:{worker_port}/webhooks/maac",
                        webhook_delay_s=0.2, seed=7, air_outbound=air_outbound)
    box.start()
    yield box
    asyncio.run_coroutine_threadsafe(air_outbound.stop(), box.loop).result(10)
    box.stop()


@pytest.fixture(scope="module")
def start_worker(broker, sandbox, worker_port, tmp_path_factory):
    """Start relay workers; each is stopped at the end of the module."""
    started: list[WorkerProcess] = []

    # Workers screen messages without quiet hours unless a test brings its own policy: the
    # suite's results must not depend on the hour CI runs at.
    messaging = without_quiet_hours(load_settings({}).messaging_file, str(
        tmp_path_factory.mktemp("policy") / "messaging.yaml"))

    def start(port: int | None = None, data_dir: str | None = None, **env) -> WorkerProcess:
        data_dir = data_dir or str(tmp_path_factory.mktemp("worker"))
        env.setdefault("MESSAGING_FILE", messaging)
        proc = WorkerProcess(base_env(broker.url, sandbox.credentials(), LOG_LEVEL="info", **env),
                             data_dir, web_port=port or worker_port)
        proc.start()
        started.append(proc)
        STARTED_WORKERS.append(proc)
        asyncio.run(proc.wait_ready(90))
        return proc

    yield start
    for proc in started:
        STARTED_WORKERS.remove(proc)
        proc.stop()
        if Path(proc.log_path).exists():
            tail = Path(proc.log_path).read_text(errors="replace")[-3000:]
            print(f"--- worker log tail ({proc.log_path}) ---\n{tail}")
