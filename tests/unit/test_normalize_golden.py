"""Golden tests: every raw fixture under tests/fixtures/<source>/ against its expected envelopes.

Regenerate after an intended change with:
    UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/unit/test_normalize_golden.py
and review the diff of tests/fixtures/golden/.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app.config import Settings
from app.envelope import Rejected
from app.normalize import SOURCES, normalize_bytes

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
GOLDEN = FIXTURES / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
SETTINGS = Settings()


def cases() -> list[tuple[str, Path]]:
    found = []
    for source in SOURCES:
        for path in sorted((FIXTURES / source).glob("*.json")):
            if not path.name.endswith(".headers.json"):
                found.append((source, path))
    return found


def run(source: str, path: Path) -> object:
    headers_path = path.with_name(path.stem + ".headers.json")
    headers = json.loads(headers_path.read_text()) if headers_path.exists() else {}
    try:
        return normalize_bytes(source, path.read_bytes(), headers, SETTINGS)
    except Rejected as exc:
        return {"rejected": {"code": exc.code, "detail": exc.detail}}


def test_every_source_has_fixtures():
    counts = {source: 0 for source in SOURCES}
    for source, _ in cases():
        counts[source] += 1
    assert all(counts.values()), counts


@pytest.mark.parametrize("source,path", cases(), ids=lambda c: getattr(c, "stem", c))
def test_golden(source: str, path: Path):
    result = run(source, path)
    golden = GOLDEN / f"{source}__{path.stem}.json"
    if UPDATE or not golden.exists():
        golden.write_text(json.dumps(result, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
        if not UPDATE:
            pytest.fail(f"golden file was missing and has been written: {golden.name}")
    expected = json.loads(golden.read_text())
    assert result == expected
    if path.stem.startswith("bad_"):
        assert isinstance(result, dict) and "rejected" in result, "bad_ fixtures must be rejected"
    else:
        assert isinstance(result, list) and result, f"{path.name} should normalize"
