"""The `faust_consume_only_per_s` reference of `relay bench`: a minimal Faust app whose one agent
only iterates the ingress topics (no parsing, no sends, no tables).

Run as its own process by the benchmark so it gets a whole interpreter, like the relay worker:

    python -m app.bench_faust --broker kafka://127.0.0.1:9092 --expect 20000 --datadir DIR

It prints `faust_consume_only_per_s: <events/s>` (first event to the `--expect`-th) and exits 0,
or exits 1 after `--timeout` seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.bench_faust")
    parser.add_argument("--broker", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--datadir", required=True)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)

    import faust
    import mode.loop
    from faust.worker import Worker

    from app.config import EVENT_LOOPS, load_settings
    from app.samples import INGRESS_TOPICS

    # The same event loop as the relay worker, so `pipeline_vs_faust` compares like with like.
    mode.loop.use(EVENT_LOOPS[load_settings().event_loop])

    app = faust.App(
        f"bench-faust-{uuid.uuid4().hex[:8]}", broker=args.broker, store="memory://",
        datadir=args.datadir, web_enabled=False, consumer_auto_offset_reset="earliest",
        broker_session_timeout=10, broker_rebalance_timeout=10, broker_heartbeat_interval=1,
        stream_buffer_maxsize=8192, topic_allow_declare=False,
    )
    topic = app.topic(*INGRESS_TOPICS, key_serializer="raw", value_serializer="raw")
    state = {"n": 0, "t0": 0.0}
    started = time.monotonic()

    @app.agent(topic)
    async def consume_only(stream):
        async for _value in stream:
            if not state["n"]:
                state["t0"] = time.monotonic()
            state["n"] += 1
            if state["n"] >= args.expect:
                elapsed = max(time.monotonic() - state["t0"], 1e-9)
                print(f"faust_consume_only_per_s: {state['n'] / elapsed:.0f}", flush=True)
                os._exit(0)

    @app.timer(1.0)
    async def give_up():
        if time.monotonic() - started > args.timeout:
            print(f"bench_faust: timed out after {state['n']} events", file=sys.stderr, flush=True)
            os._exit(1)

    Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False,
           override_logging=False).execute_from_commandline()
    return 1


if __name__ == "__main__":
    sys.exit(main())
