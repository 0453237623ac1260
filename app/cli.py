"""`relay` (also `python -m app`): the command line. Other tools depend on these names.

Every failure the user can cause ends with one clear line on stderr and a non-zero exit:
2 for rejected input or configuration, 1 when a run did not account for everything.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import orjson

from app.config import ConfigError, load_settings

SOURCES = ("air", "annex", "journey", "audience", "identity", "sessionm", "maac")


def fail(message: str, code: int = 2) -> int:
    print(f"relay: {message}", file=sys.stderr)
    return code


def cmd_worker(args) -> int:
    import os

    from app import logs
    from app.broker import broker_is_tansu, install_highwater_fix
    from app.catalog import bootstrap_of, create_topics, load_catalog

    settings = load_settings()
    if not settings.broker_url:
        return fail("BROKER_URL is not set: `relay worker` needs a broker "
                    "(`relay run` starts an embedded one)")
    logs.configure(settings.log_level)
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
    result, error = inspect_payload(settings, args.source, raw)
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
    inspect.set_defaults(func=cmd_inspect)

    sandbox = sub.add_parser("sandbox", help="the destination emulators alone")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8700)
    sandbox.set_defaults(func=cmd_sandbox)

    topics = sub.add_parser("topics", help="create or describe the catalog's topics")
    topics.add_argument("action", choices=("create", "describe"))
    topics.add_argument("--json", action="store_true")
    topics.set_defaults(func=cmd_topics)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        return fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
