"""Faust's livelock check on a worker working through a backlog: it must not report a stage as
stalled while the stage keeps up. Two false alarms it raised, once the worker had run for
`stream_processing_timeout` (300 s; `STREAM_STALL_S`):
- "Stream has not started processing" for every batch-agent partition with records not yet
  fetched: Faust reads when a partition's stream last processed, which only its own streams
  set. The batch agents (app/batches.py) now tell its monitor.
- "Aiokafka has not sent fetch request" for every changelog partition, every 2.5 s: they are
  paused in aiokafka and read during recovery only (app/faust_fixes.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from app.bench import backlog
from app.broker import free_port, record_counts
from app.localstack import produce
from tests.integration.conftest import logged_state, wait_until

pytestmark = pytest.mark.integration

FALSE_ALARMS = ("Stream has not started processing", "has not sent fetch request",
                "stopped fetching from")
STALL_S = 2  # the check runs every 2.5 s (Faust: 2.5 commit intervals)


def outcome_count(broker) -> int:
    return asyncio.run(record_counts(broker.bootstrap, ["relay.outcomes"]))["relay.outcomes"]


def test_a_worker_working_through_a_backlog_reports_no_stalled_stream(broker, start_worker):
    worker = start_worker(port=free_port(), APP_ID="stall-log", STREAM_STALL_S=str(STALL_S))
    time.sleep(STALL_S + 1)  # past the timeout: from here any partition never processed counts
    asyncio.run(produce(broker.bootstrap, backlog(6000, seed=77)))

    seen: list[int] = []

    def settled() -> bool:  # no new outcome for three checks in a row
        seen.append(outcome_count(broker))
        return len(seen) > 3 and seen[-1] > 0 and seen[-1] == seen[-4]

    wait_until(settled, timeout_s=240, interval_s=1.0, what="the backlog processed")
    logged_state(worker)  # the worker is alive and this is the log it writes
    log = Path(worker.log_path).read_text(errors="replace")
    # The false alarms: a stream "never started", and changelogs (read during recovery only)
    # "not fetched". With a 2 s timeout on 2 shared cores, one slow batch may fairly be called
    # slow ("Stream stopped processing, or is slow"), so that one is not asserted.
    false_alarms = [line[:200] for line in log.splitlines() if any(
        claim in line for claim in FALSE_ALARMS)]
    assert not false_alarms, "\n".join(false_alarms[:5])
