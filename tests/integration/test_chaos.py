"""The short form of `make chaos`: failures, a SIGKILL, an outage and a full replay must end with
nothing lost and nothing sent twice."""

import os
import subprocess
import sys


def test_chaos_quick_loses_nothing_and_sends_nothing_twice(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "BROKER_URL"}
    result = subprocess.run([sys.executable, "-m", "app", "chaos", "--quick"],
                            capture_output=True, env=env, timeout=600, cwd=tmp_path)
    out = result.stdout.decode()
    figures = dict(line.split(": ", 1) for line in out.splitlines()
                   if ": " in line and not line.startswith("#"))
    assert result.returncode == 0, out + result.stderr.decode()[-2000:]
    assert figures["lost"] == "0" and figures["duplicates"] == "0"
    assert int(figures["deliveries_accepted"]) > 0 and int(figures["retries"]) > 0
    assert int(figures["ingress_records_accounted"]) >= 2 * int(figures["events_sent"])  # + replay
