"""`relay bench --quick`: every figure is printed with a number and the run is recorded.

A smoke test only: the figures themselves are not asserted (2 shared cores make them noisy)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

EXPECTED = (
    "aiokafka_consume_per_s", "faust_consume_only_per_s", "pipeline_per_s",
    "pipeline_deliveries_per_s", "pipeline_vs_faust", "latency_p50_ms", "latency_p99_ms",
    "worker_rss_mb", "profiles_loaded", "scaling_2_workers", "worker_cpu_ms_per_event",
    "kafka_records_per_event", "broker_cpu_ms_per_event", "sandbox_cpu_ms_per_event",
    "bench_driver_cpu_ms_per_event",
)


def test_bench_quick_prints_every_figure_and_records_the_run(tmp_path):
    record = tmp_path / "BENCHMARKS.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["RELAY_BENCH_FILE"] = str(record)
    result = subprocess.run([sys.executable, "-m", "app", "bench", "--quick"], env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = {}
    for line in result.stdout.splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            figures[name.strip()] = value.strip()
    for name in EXPECTED:
        assert name in figures, f"{name} missing from:\n{result.stdout}"
        assert math.isfinite(float(figures[name])), f"{name}: {figures[name]}\n{result.stderr}"
    assert any(name.startswith("requests_per_event_") for name in figures), result.stdout
    text = record.read_text()
    assert "## " in text and "commit" in text
    assert "| pipeline_per_s |" in text
    assert "latency by stage" in result.stderr and "records written per ingress record" in \
        result.stderr, result.stderr[-3000:]
