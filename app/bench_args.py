"""The options of `relay bench`, kept apart from app.bench so the CLI parser stays cheap to build."""

from __future__ import annotations

import argparse

DEFAULT_EVENTS = 20_000
DEFAULT_PROFILES = 1_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=None,
                        help=f"ingress records in the backlog (default {DEFAULT_EVENTS})")
    parser.add_argument("--profiles", type=int, default=None,
                        help=f"profiles pre-loaded in the identity graph (default {DEFAULT_PROFILES})")
    parser.add_argument("--store", default="rocksdb://", choices=("rocksdb://", "memory://"),
                        help="the workers' table store (default rocksdb://, as in production)")
    parser.add_argument("--quick", action="store_true", help="a tiny run (smoke test)")
    parser.add_argument("--skip-scaling", action="store_true", help="no two-worker phase")
    parser.add_argument("--latency-s", type=float, default=20.0,
                        help="seconds of live traffic at half load for the latency figures")
    parser.add_argument("--rate-scale", type=float, default=20.0,
                        help="scale every destination rate limit (sandbox and relay, max 100)")
    parser.add_argument("--output", default=None,
                        help="file the figures are appended to (default BENCHMARKS.md, or "
                             "RELAY_BENCH_FILE)")
    parser.add_argument("--profile", default=None,
                        help="py-spy raw profile of the worker during the backlog phase (only the "
                             "thread holding the GIL: a thread waiting for it is not working)")
    parser.add_argument("--profile-rate", type=int, default=100,
                        help="py-spy samples per second for --profile (default 100)")
