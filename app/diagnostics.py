"""`kill -USR2 <worker pid>` writes every asyncio task's stack to the log.

A stream processor that stops consuming without crashing is the hardest failure to explain after
the fact; a task dump taken while it is stuck shows which await never returns. Frames only: no
local variables, so no personal data can reach the log.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from typing import Any

import structlog

log = structlog.get_logger(__name__)


def await_chain(awaitable: Any, limit: int = 40) -> list[str]:
    """`file:line function` for each coroutine in the chain a task is suspended in.

    `Task.get_stack()` shows only the outermost frame of a suspended coroutine; the interesting
    frame is at the other end of the `cr_await` chain."""
    frames = []
    while awaitable is not None and len(frames) < limit:
        frame = (getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
                 or getattr(awaitable, "ag_frame", None))
        if frame is not None:
            frames.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        awaitable = (getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
                     or getattr(awaitable, "ag_await", None) or _generator_behind(awaitable))
    return frames


def _generator_behind(awaitable: Any) -> Any:
    """`async for` suspends in an `async_generator_asend` object, which exposes no attribute
    for the generator it drives; the garbage collector knows it."""
    if type(awaitable).__name__ not in ("async_generator_asend", "async_generator_athrow"):
        return None
    return next((ref for ref in gc.get_referents(awaitable) if hasattr(ref, "ag_frame")), None)


def task_stacks() -> list[tuple[str, str]]:
    """(task name, await chain) for every pending task on the running loop."""
    return [(task.get_name(), " <- ".join(reversed(await_chain(task.get_coro()))))
            for task in asyncio.all_tasks()]


def dump_tasks() -> None:
    stacks = task_stacks()
    for name, stack in stacks:
        log.warning("diagnostics.task", task=name, stack=stack)
    log.warning("diagnostics.tasks_dumped", tasks=len(stacks))


def install_task_dump(state=None, loop: asyncio.AbstractEventLoop | None = None) -> None:
    """`state` is a callable returning extra fields worth seeing beside the stacks."""
    def dump() -> None:
        dump_tasks()
        if state is not None:
            log.warning("diagnostics.state", **state())
    (loop or asyncio.get_running_loop()).add_signal_handler(signal.SIGUSR2, dump)
