"""`relay` (also `python -m app`): the command line. Other tools depend on these names.

Every failure the user can cause ends with one clear line on stderr and a non-zero exit:
2 for rejected input or configuration, 1 when a run did not account for everything.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import sys
from collections.abc import Sequence

import orjson

from app.config import ConfigError, load_settings

SOURCES = ("air", "annex", "journey", "audience", "identity", "sessionm", "maac")


def fail(message: str, code: int = 2) -> int:
    print(f"relay: {message}", file=sys.stderr)
    return code


def cmd_worker(args) -> int:
    import mode.loop

    from app import logs
    from app.broker import broker_is_tansu, install_highwater_fix
    from app.catalog import bootstrap_of, create_topics, load_catalog
    from app.config import EVENT_LOOPS

    settings = load_settings()
    if not settings.broker_url:
        return fail("BROKER_URL is not set: `relay worker` needs a broker "
                    "(`relay run` starts an embedded one)")
    logs.configure(settings.log_level)
    mode.loop.use(EVENT_LOOPS[settings.event_loop])
    if broker_is_tansu():
        install_highwater_fix()
    asyncio.run(create_topics(bootstrap_of(settings.broker_url), load_catalog(settings)))
    from faust.worker import Worker

    from app.worker import create_app

    app = create_app(settings, trace_ids=os.environ.get("RELAY_TRACE_IDS") == "1")
    worker = Worker(app, loglevel=settings.log_level.upper(), override_logging=False,
                    quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0


def cmd_run(args) -> int:
    from app import logs
    from app.run import run_local

    settings = load_settings()
    logs.configure("warning")
    try:
        return asyncio.run(run_local(settings, args.events, args.rate, args.timeout,
                                     live=not args.quiet))
    except KeyboardInterrupt:
        return 130
    except (RuntimeError, TimeoutError, OSError) as exc:
        return fail(str(exc), 1)


def cmd_inspect(args) -> int:
    from app.inspect import inspect_payload

    settings = load_settings()
    try:
        raw = sys.stdin.buffer.read() if args.file in (None, "-") else open(args.file, "rb").read()
    except OSError as exc:
        return fail(f"cannot read {args.file}: {exc.strerror}")
    profile = None
    if args.profile:
        try:
            profile = orjson.loads(open(args.profile, "rb").read())
        except OSError as exc:
            return fail(f"cannot read {args.profile}: {exc.strerror}")
        except orjson.JSONDecodeError as exc:
            return fail(f"{args.profile} is not JSON: {exc}")
        if not isinstance(profile, dict):
            return fail(f"{args.profile} must hold a JSON object (a profile)")
    result, error = inspect_payload(settings, args.source, raw, profile, args.at)
    if error:
        return fail(error)
    sys.stdout.buffer.write(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def cmd_sandbox(args) -> int:
    from app import logs
    from app.sandbox import serve

    logs.configure("info")
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_topics(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from app.catalog import bootstrap_of, create_topics, describe_topics, load_catalog

    settings = load_settings()
    if not settings.broker_url:
        return fail("BROKER_URL is not set: topics need a broker")
    specs = load_catalog(settings)
    bootstrap = bootstrap_of(settings.broker_url)
    if args.action == "create":
        created = asyncio.run(create_topics(bootstrap, specs))
        print(f"created {len(created)} topics, {len(specs) - len(created)} already existed")
        return 0
    rows = asyncio.run(describe_topics(bootstrap, specs))
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    table = Table()
    for column in ("name", "partitions", "broker_partitions", "cleanup_policy", "retention_ms",
                   "messages", "key"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("name", "partitions", "broker_partitions",
                                              "cleanup_policy", "retention_ms", "messages", "key")))
    Console().print(table)
    return 0


def _broker_settings():
    settings = load_settings()
    if not settings.broker_url:
        raise ConfigError("BROKER_URL is not set: this command reads and writes topics")
    from app.catalog import bootstrap_of

    return settings, bootstrap_of(settings.broker_url)


def _iso(name: str, raw: str | None):
    if raw is None:
        return None
    from app.envelope import Rejected, parse_time

    try:
        return parse_time(raw)
    except Rejected:
        raise ConfigError(f"{name} must be an ISO-8601 time, got {raw!r}") from None


def cmd_replay(args) -> int:
    from app.replay import replay

    settings, bootstrap = _broker_settings()
    since, until = _iso("--since", args.since), _iso("--until", args.until)
    try:
        summary = asyncio.run(replay(settings, bootstrap, args.topic, args.from_offset, since,
                                     until, args.dry_run, args.resend,
                                     show_progress=sys.stderr.isatty()))
    except ValueError as exc:
        return fail(str(exc))
    print("\n".join(summary.lines(args.dry_run)))
    return 0


def cmd_dlq(args) -> int:
    from app.replay import (
        AMBIGUOUS_PREFIX,
        dlq_records,
        dlq_summary,
        redrive,
        redrive_selection,
    )

    _settings, bootstrap = _broker_settings()
    records = asyncio.run(dlq_records(bootstrap, args.topic))
    if args.action == "show":
        for label, count in sorted(dlq_summary(records, args.topic).items()):
            print(f"{label}: {count}")
        print(f"total: {len(records)}")
        return 0
    chosen = redrive_selection(records, args.topic, args.destination, args.reason)
    kept = 0 if args.reason else len(redrive_selection(records, args.topic, args.destination,
                                                       AMBIGUOUS_PREFIX))
    if kept:
        print(f"held back: {kept} that may have reached the destination "
              "(name them with --reason ambiguous_)")
    if args.dry_run:
        print(f"would re-drive: {len(chosen)} of {len(records)}")
        return 0
    print(f"re-driven: {asyncio.run(redrive(bootstrap, args.topic, chosen))} of {len(records)}")
    return 0


def cmd_export(args) -> int:
    from app.export import run_export

    settings, bootstrap = _broker_settings()
    result = asyncio.run(run_export(settings, bootstrap, args.kind, args.segment, args.user_id,
                                    args.idle))
    text = result.csv()
    if args.out in (None, "-"):
        sys.stdout.write(text)
    else:
        try:
            with open(args.out, "w", newline="") as handle:
                handle.write(text)
        except OSError as exc:
            return fail(f"cannot write {args.out}: {exc.strerror}")
    print(f"relay: {result.summary()}", file=sys.stderr)
    return 0


def cmd_bench(args) -> int:
    from app.bench import cmd_bench as run_bench

    try:
        return run_bench(args)
    except (RuntimeError, TimeoutError, OSError) as exc:
        return fail(str(exc), 1)


def cmd_chaos(args) -> int:
    from app import logs
    from app.chaos import ChaosConfig, run_chaos

    settings = load_settings()
    logs.configure("warning")
    cfg = ChaosConfig(events=args.events, kills=args.kills, outage_s=args.outage,
                      fault_rate=args.fault_rate, replay=not args.no_replay)
    if args.quick:
        cfg.events, cfg.kills, cfg.outage_s = min(cfg.events, 800), min(cfg.kills, 1), 5.0
        cfg.deadline_s = 360.0
    result = asyncio.run(run_chaos(settings, cfg, say=lambda m: print(f"# {m}", flush=True)))
    for name, value in result.items():
        if not name.startswith("_"):
            print(f"{name}: {value}")
    if result["lost"] or result["duplicates"]:
        print(f"# lost examples: {result['_lost_examples']}")
        print(f"# duplicate examples: {result['_duplicate_examples']}")
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description="Loyalty Relay")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="the whole relay on one machine, with sample traffic")
    run.add_argument("--events", type=int, default=None,
                     help="send N sample events, wait until each is accounted for, then exit")
    run.add_argument("--rate", type=float, default=0.0,
                     help="sample events per second (default: as fast as possible)")
    run.add_argument("--timeout", type=float, default=None, help="seconds to wait at the end")
    run.add_argument("--quiet", action="store_true", help="no live view, only the summary")
    run.set_defaults(func=cmd_run)

    worker = sub.add_parser("worker", help="a production worker against BROKER_URL")
    worker.set_defaults(func=cmd_worker)

    inspect = sub.add_parser("inspect", help="dry run for one raw payload; calls nothing")
    inspect.add_argument("--source", required=True, choices=SOURCES)
    inspect.add_argument("file", nargs="?", default="-")
    inspect.add_argument("--profile", default=None,
                         help="a profile (JSON: consent `c`, contact history `h`, attributes `a`, "
                              "identifiers `i`, as GET /profiles shows) to screen the messages "
                              "against: consent, frequency caps, quiet hours")
    inspect.add_argument("--at", default=None,
                         help="the time of the decision (ISO 8601, default now)")
    inspect.set_defaults(func=cmd_inspect)

    sandbox = sub.add_parser("sandbox", help="the destination emulators alone")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8700)
    sandbox.set_defaults(func=cmd_sandbox)

    replay = sub.add_parser("replay", help="re-feed a range of an ingress topic")
    replay.add_argument("--topic", required=True)
    start = replay.add_mutually_exclusive_group()
    start.add_argument("--from-offset", type=int, default=None)
    start.add_argument("--since", default=None, help="ISO time, on the events' own occurred_at")
    replay.add_argument("--until", default=None, help="ISO time (exclusive)")
    replay.add_argument("--dry-run", action="store_true", help="show what would be sent")
    replay.add_argument("--resend", action="store_true",
                        help="send again even what was already delivered")
    replay.set_defaults(func=cmd_replay)

    dlq = sub.add_parser("dlq", help="show or re-drive dead letters")
    dlq.add_argument("action", choices=("show", "redrive"))
    dlq.add_argument("--topic", default="deliveries.dlq", choices=("deliveries.dlq", "ingress.dlq"))
    dlq.add_argument("--destination", default=None,
                     help="only this destination (deliveries.dlq) or source (ingress.dlq)")
    dlq.add_argument("--reason", default=None, help="only reasons starting with this")
    dlq.add_argument("--dry-run", action="store_true")
    dlq.set_defaults(func=cmd_dlq)

    export = sub.add_parser(
        "export", help="a segment's members as a CSV for SessionM or Attentive",
        description="A segment's members (latest audience.membership change = entered) with the "
                    "identifiers the identity graph knows for their unified profile (read from the "
                    "worker's identities and profiles changelogs of APP_ID), else the membership "
                    "record's own; counts only on stderr.")
    export.add_argument("kind", choices=("sessionm-tags", "attentive-list"))
    export.add_argument("--segment", required=True, help="the segment (audience) id")
    export.add_argument("--out", default=None, help="file to write (default: stdout)")
    export.add_argument("--user-id", default="external", choices=("external", "sessionm"),
                        help="sessionm-tags: which id fills user_id (default: external id)")
    export.add_argument("--idle", type=float, default=3.0,
                        help="seconds without new records that end the read of each topic "
                             "(memberships, then the identity graph's changelogs)")
    export.set_defaults(func=cmd_export)

    bench = sub.add_parser("bench", help="the benchmark; prints `name: value` lines")
    from app.bench_args import add_arguments as bench_arguments

    bench_arguments(bench)
    bench.set_defaults(func=cmd_bench)

    chaos = sub.add_parser("chaos", help="prove nothing is lost or sent twice under failures")
    chaos.add_argument("--events", type=int, default=10_000)
    chaos.add_argument("--kills", type=int, default=2, help="SIGKILLs of the worker mid-stream")
    chaos.add_argument("--outage", type=float, default=60.0, help="seconds one destination is down")
    chaos.add_argument("--fault-rate", type=float, default=0.3)
    chaos.add_argument("--no-replay", action="store_true")
    chaos.add_argument("--quick", action="store_true", help="the short form run by make test")
    chaos.set_defaults(func=cmd_chaos)

    topics = sub.add_parser("topics", help="create or describe the catalog's topics")
    topics.add_argument("action", choices=("create", "describe"))
    topics.add_argument("--json", action="store_true")
    topics.set_defaults(func=cmd_topics)
    return parser


def _terminate_like_interrupt(_signum, frame) -> None:
    """SIGTERM does what Ctrl-C does: asyncio's SIGINT handler cancels the command's main task,
    Python's default one raises KeyboardInterrupt. Called directly rather than through
    `raise_signal(SIGINT)`: a background job of a script starts with SIGINT ignored, and SIGTERM
    then did nothing at all."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def _broker_shown() -> str:
    """BROKER_URL without any user or password it carries."""
    return re.sub(r"//[^@/]*@", "//", os.environ.get("BROKER_URL") or "") or "?"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.func is not cmd_worker:
        # SIGTERM (docker stop, Kubernetes, `timeout`) ends a command the way Ctrl-C does, so
        # `relay run`, `bench` and `chaos` stop the broker, sandbox and workers they started
        # instead of leaving them running. Faust's worker handles SIGTERM itself.
        signal.signal(signal.SIGTERM, _terminate_like_interrupt)
        # aiokafka logs each failed connection attempt itself; the command says it once.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    from aiokafka.errors import KafkaConnectionError, KafkaError

    try:
        return args.func(args)
    except ConfigError as exc:
        return fail(str(exc))
    except KafkaConnectionError:
        return fail(f"cannot reach the Kafka broker at {_broker_shown()} (BROKER_URL): "
                    "is it running?", 1)
    except KafkaError as exc:
        return fail(f"Kafka refused: {type(exc).__name__}: {exc}", 1)


if __name__ == "__main__":
    sys.exit(main())
