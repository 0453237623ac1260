"""SIGTERM stops `relay run`, `bench` and `chaos` the way Ctrl-C does: the command's main task
is cancelled, so what it started is stopped, and it exits with 130. That must hold when the
command runs as a background job of a script, which starts with SIGINT ignored."""

import signal
import subprocess
import sys

import pytest

# A command shaped like `relay run`: asyncio.run of a main task that cleans up when cancelled.
COMMAND = """
import asyncio, signal, sys
from app import cli
signal.signal(signal.SIGTERM, cli._terminate_like_interrupt)

async def main():
    try:
        print("ready", flush=True)
        await asyncio.sleep(3600)
    finally:
        print("cleaned up", flush=True)

try:
    asyncio.run(main())
except KeyboardInterrupt:
    sys.exit(130)
"""


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what `cmd &` in a script gets


@pytest.mark.parametrize("preexec", [None, ignore_sigint], ids=["foreground", "background-job"])
def test_sigterm_cancels_the_command_and_exits_130(preexec):
    proc = subprocess.Popen([sys.executable, "-c", COMMAND], stdout=subprocess.PIPE,
                            preexec_fn=preexec)
    try:
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 130
        assert proc.stdout.read() == b"cleaned up\n"
    finally:
        if proc.poll() is None:
            proc.kill()
