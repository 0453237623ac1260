"""Braze segment -> SessionM tag configuration (`topics/segments.yaml`, `SEGMENTS_FILE`).

Configuration as data: one entry per Braze segment id names the SessionM tag, its TTL and what
leaving the segment does. The `segment_tag` action and `relay export sessionm-tags` read the same
file; `load_settings` validates it at start-up, so a typo stops the worker with one line::

    sessionm_tags:
      seg-vip-shoppers:
        tag: braze_vip_shopper
        ttl_s: 2592000        # optional: without it the tag is a counter and never expires
        on_exit: keep         # keep (default): leaving removes nothing
                              # expire: re-tag with a 1 s TTL so the tag lapses at once
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app.config import ConfigError

ON_EXIT = ("keep", "expire")
KEYS = {"tag", "ttl_s", "on_exit"}
TAG_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,100}$")
EXPIRE_TTL_S = 1  # SessionM drops a tag when its TTL runs out; a re-tag resets the TTL


@dataclass(frozen=True)
class SegmentTag:
    segment: str
    tag: str
    ttl_s: int | None = None
    on_exit: str = "keep"


def parse_segments(doc: Any, where: str = "SEGMENTS_FILE") -> dict[str, SegmentTag]:
    """Validate the document; ConfigError naming the file and the segment on any mistake."""
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{where} must be a mapping with a 'sessionm_tags' section")
    unknown = set(doc) - {"sessionm_tags"}
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {sorted(unknown)}")
    section = doc.get("sessionm_tags") or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where}: 'sessionm_tags' must map segment ids to {{tag, ttl_s}}")
    out: dict[str, SegmentTag] = {}
    for segment, spec in section.items():
        name = f"{where} segment {str(segment)!r}"
        if not isinstance(segment, str) or not segment.strip():
            raise ConfigError(f"{where}: segment ids must be non-empty strings")
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{name} must be a mapping with 'tag'")
        extra = set(spec) - KEYS
        if extra:
            raise ConfigError(f"{name}: unknown key(s) {sorted(extra)}; allowed {sorted(KEYS)}")
        tag = spec.get("tag")
        if not isinstance(tag, str) or not TAG_NAME.match(tag):
            raise ConfigError(f"{name}: 'tag' must be 1-100 characters of letters, digits, _.:-")
        ttl = spec.get("ttl_s")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0):
            raise ConfigError(f"{name}: 'ttl_s' must be a positive whole number of seconds")
        on_exit = spec.get("on_exit", "keep")
        if on_exit not in ON_EXIT:
            raise ConfigError(f"{name}: 'on_exit' must be one of {list(ON_EXIT)}")
        out[segment] = SegmentTag(segment, tag, ttl, on_exit)
    return out


@functools.lru_cache(maxsize=8)
def load_segments(path: str) -> dict[str, SegmentTag]:
    """The parsed file (cached per path); ConfigError when unreadable or invalid."""
    if not path:
        return {}
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"SEGMENTS_FILE cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"SEGMENTS_FILE is not valid YAML: {exc}") from None
    return parse_segments(doc)
