"""The command line as users run it: real subprocesses, exit codes and one-line errors."""

import os
import signal
import subprocess
import sys
import time

import orjson
import pytest

from tests.integration.test_vertical_slice import tier_move

RELAY = [sys.executable, "-m", "app"]


def relay(*args: str, stdin: bytes | None = None, env: dict | None = None, timeout: float = 60):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*RELAY, *args], input=stdin, capture_output=True, env=full_env,
                          timeout=timeout)


def test_inspect_prints_envelope_and_planned_requests():
    payload = orjson.dumps(tier_move("C-77", "0c6b8f9e-1111-4a4a-9c9c-123456789abc"))
    result = relay("inspect", "--source", "air", "-", stdin=payload)
    assert result.returncode == 0, result.stderr
    out = orjson.loads(result.stdout)
    envelope = out["envelopes"][0]
    assert envelope["type"] == "loyalty.tier.moved"
    assert envelope["identities"]["customer_id"] == "C-77"
    planned = {(d["destination"], d["action"]) for d in out["deliveries"]}
    assert {("braze", "track_attributes"), ("braze", "track_event"), ("insider", "upsert")} <= planned
    braze = next(d for d in out["deliveries"] if d["action"] == "track_attributes")
    assert braze["request"]["path"] == "/users/track"


@pytest.mark.parametrize("payload", [b"{}", b"not json", b"[1, 2]", b""])
def test_inspect_rejects_with_one_line_and_exit_2(payload):
    result = relay("inspect", "--source", "air", "-", stdin=payload)
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("relay: rejected")
    assert result.stdout == b""


def test_a_wrong_setting_stops_with_one_line_naming_it():
    result = relay("inspect", "--source", "air", "-", stdin=b"{}", env={"PARTITIONS": "lots"})
    assert result.returncode == 2
    assert result.stderr.decode().strip() == "relay: PARTITIONS must be an integer, got 'lots'"


def test_worker_without_a_broker_says_so():
    env = {k: v for k, v in os.environ.items() if k != "BROKER_URL"}
    result = subprocess.run([*RELAY, "worker"], capture_output=True, env=env, timeout=60)
    assert result.returncode == 2
    assert "BROKER_URL" in result.stderr.decode()


@pytest.mark.parametrize("command", [
    ("replay", "--topic", "air.outbound"), ("dlq", "show"), ("dlq", "redrive", "--reason", "x"),
    ("topics", "describe"), ("topics", "create")])
def test_a_broker_out_of_reach_is_one_line_without_the_password(command):
    from app.broker import free_port

    url = f"kafka://relay:s3cret-pw@127.0.0.1:{free_port()}"  # nothing listens there
    result = relay(*command, env={"BROKER_URL": url})
    assert result.returncode == 1
    err = result.stderr.decode()
    assert err.splitlines() == [f"relay: cannot reach the Kafka broker at kafka://127.0.0.1:"
                                f"{url.rsplit(':', 1)[1]} (BROKER_URL): is it running?"], err
    assert "s3cret" not in err + result.stdout.decode()


def test_run_500_events_accounts_for_every_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "BROKER_URL" and not k.endswith("_BASE_URL")}
    result = subprocess.run([*RELAY, "run", "--events", "500", "--quiet", "--timeout", "180"],
                            capture_output=True, env=env, timeout=400, cwd=tmp_path)
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()[-3000:]
    assert "records: 500" in out and "unaccounted: 0" in out
    for destination in ("braze", "insider", "maac"):
        assert destination in out


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def running(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_stops_run_and_everything_it_started(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "BROKER_URL" and not k.endswith("_BASE_URL")}
    proc = subprocess.Popen([*RELAY, "run", "--rate", "5", "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        for line in proc.stdout:
            if line.startswith(b"worker on "):
                break
        started = children_of(proc.pid)
        assert len(started) >= 2, started  # the embedded broker and the worker at least
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR2)  # its asyncio tasks' stacks: where the stop hangs
            time.sleep(1.5)
            proc.kill()
            lines = proc.stdout.read().decode(errors="replace").splitlines()
            ours = [line for line in lines if "/app/" in line]  # the relay's own tasks first
            raise AssertionError("relay run did not stop within 60 s of SIGTERM:\n"
                                 + "\n".join(ours[-20:] + lines[-10:])) from None
        assert code == 130
        deadline = time.monotonic() + 30
        while any(running(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in started if running(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()
