import hashlib
import hmac
import io

import orjson
import structlog

from app import logs
from app.web import SeenKeys, verify_signature


def test_logs_redact_personal_data_and_secrets():
    out = io.StringIO()
    logs.configure("info", stream=out)
    structlog.get_logger("t").info(
        "sent to amy@example.com at +886912345678", email="amy@example.com",
        line_uid="U" + "f" * 32, note="Bearer abc.def-123 for U" + "0" * 32, token="s3cr3t",
        identities={"phone": "+886912345678"}, event_id="e-1")
    line = out.getvalue().strip()
    record = orjson.loads(line)
    for secret in ("amy@example.com", "+886912345678", "f" * 32, "abc.def-123", "s3cr3t", "0" * 32):
        assert secret not in line
    assert record["event_id"] == "e-1"
    structlog.reset_defaults()


def test_signature_verification_is_hmac_sha256_of_the_raw_body():
    body = b'{"topic":"message.first_open"}'
    good = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert verify_signature(body, good, "k")
    assert not verify_signature(body + b" ", good, "k")
    assert not verify_signature(body, good, "")
    assert not verify_signature(body, "", "k")


def test_seen_keys_remembers_a_bounded_number():
    seen = SeenKeys(size=2)
    assert seen.add("a") and seen.add("b") and not seen.add("a")
    assert seen.add("c") and seen.add("b")  # "b" was evicted


def test_log_lines_carry_the_current_events_ids_and_only_its_own():
    out = io.StringIO()
    logs.configure("info", stream=out)
    log = structlog.get_logger("t")
    logs.bind_event({"event_id": "e-1", "type": "points.earned",
                     "trace": {"eesEventId": "ees-9", "journey_id": ""},
                     "identities": {"email": "amy@example.com"}}, destination="braze")
    log.info("first", destination="maac")
    logs.bind_event(None, batch_size=3)
    log.info("second")
    first, second = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert (first["event_id"], first["event_type"], first["eesEventId"]) == (
        "e-1", "points.earned", "ees-9")
    assert first["destination"] == "maac"  # the call's own value wins
    assert "journey_id" not in first and "amy@example.com" not in out.getvalue()
    assert second["batch_size"] == 3 and "event_id" not in second and "eesEventId" not in second
    structlog.reset_defaults()
