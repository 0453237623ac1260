"""SIGTERM stops `relay run`, `bench` and `chaos` like Ctrl-C; if the command's main task lost
that cancel and carries on, a second interrupt follows after the grace period."""

import signal
import subprocess
import sys
import time

# A command whose main task loses its first cancel and keeps going, as something once made
# `relay run` do.
STUBBORN = """
import asyncio, signal, sys
from app import cli
cli.STOP_GRACE_S = 1.0
signal.signal(signal.SIGTERM, cli._terminate_like_interrupt)

async def main():
    print("ready", flush=True)
    lost = False
    while True:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            if lost:
                raise
            lost = True

try:
    asyncio.run(main())
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_a_command_that_lost_the_cancel_is_interrupted_again():
    proc = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 130
        assert time.monotonic() - started >= 0.9  # the first interrupt alone did not stop it
    finally:
        if proc.poll() is None:
            proc.kill()
