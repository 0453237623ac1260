"""Messaging rules as data (`topics/messaging.yaml`, `MESSAGING_FILE`), validated when loaded.

A typo in a rule that protects customers must stop start-up, not quietly protect nobody, so every
section rejects unknown keys and names the file and the entry in one line. The file holds:

- `default_timezone`: the IANA zone of customers whose country and phone say nothing.
- `channels`: per channel (`app.safety.CHANNELS`) optional `quiet_hours` (local `start`/`end`,
  "HH:MM", a window may cross midnight; `purposes` it applies to, default marketing only) and
  `consent`: `opt_in` (default: marketing needs a recorded opt-in) or `opt_out` (marketing is
  allowed unless the person opted out, for channels whose opt-in lives on the platform itself).
- `actions`: `destination: {action: {channel, purpose}}`, the default kind of every action that
  messages a person. A routing target may declare its own (`channel`, `purpose` in routes.yaml).
- `caps`: `{name, window, max, match: {channel, purpose}, per: journey}`; a window is "90m",
  "24h", "7d", "30s" or whole seconds.

`message_kind` says whether a planned delivery is a message at all: anything that is not (an
attribute update, an event, a tag) is never suppressed, deferred or counted.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from app.config import ConfigError
from app.safety import CHANNELS, PURPOSES

WHERE = "MESSAGING_FILE"
SECTIONS = {"default_timezone", "channels", "actions", "caps"}
CHANNEL_KEYS = {"quiet_hours", "consent"}
QUIET_KEYS = {"start", "end", "purposes"}
KIND_KEYS = {"channel", "purpose"}
CAP_KEYS = {"name", "window", "max", "match", "per"}
MATCH_KEYS = {"channel", "purpose"}
CONSENT_MODES = ("opt_in", "opt_out")
PER = ("journey",)
CAP_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,39}$")
CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")
WINDOW = re.compile(r"^(\d+)\s*([smhd])$")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_WINDOW_S = 366 * 86400


@dataclass(frozen=True)
class QuietHours:
    """Local wall-clock times; quiet from `start` (inclusive) to `end` (exclusive)."""

    start: time
    end: time
    purposes: frozenset[str] = frozenset({"marketing"})

    def covers(self, local: time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


@dataclass(frozen=True)
class Channel:
    name: str
    quiet_hours: QuietHours | None = None
    consent: str = "opt_in"


@dataclass(frozen=True)
class Cap:
    name: str
    window_s: int
    max: int
    channel: str | None = None
    purpose: str | None = None
    per: str | None = None

    def matches(self, channel: str, purpose: str) -> bool:
        return (self.channel is None or self.channel == channel) and (
            self.purpose is None or self.purpose == purpose)


@dataclass(frozen=True)
class Policy:
    default_timezone: str
    channels: Mapping[str, Channel]
    actions: Mapping[tuple[str, str], tuple[str, str]]
    caps: tuple[Cap, ...]

    @property
    def history_keep_s(self) -> int:
        """How long a sent message matters to any cap: the longest window."""
        return max((cap.window_s for cap in self.caps), default=0)

    def channel(self, name: str) -> Channel:
        return self.channels.get(name) or Channel(name)

    def quiet_window(self, channel: str, purpose: str) -> QuietHours | None:
        window = self.channel(channel).quiet_hours
        return window if window is not None and purpose in window.purposes else None


def _fail(message: str) -> ConfigError:
    return ConfigError(f"{WHERE} {message}")


def _mapping(value: Any, what: str, keys: set[str] | None = None) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(f"{what} must be a mapping")
    if keys is not None:
        unknown = set(value) - keys
        if unknown:
            raise _fail(f"{what}: unknown key(s) {sorted(map(str, unknown))}; "
                        f"allowed {sorted(keys)}")
    return value


def _choice(value: Any, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise _fail(f"{what} must be one of {list(allowed)}, got {value!r}")
    return value


def _clock(value: Any, what: str) -> time:
    match = CLOCK.match(value) if isinstance(value, str) else None
    if not match:
        raise _fail(f"{what} must be a quoted local time \"HH:MM\" (00:00-23:59, seconds "
                    f"optional), got {value!r}")
    return time(int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))


def parse_window(value: Any, what: str = "window") -> int:
    """"90m" / "24h" / "7d" / "30s" / whole seconds -> seconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        match = WINDOW.match(value.strip().lower()) if isinstance(value, str) else None
        if not match:
            raise _fail(f"{what} must be like \"90m\", \"24h\", \"7d\" or whole seconds, "
                        f"got {value!r}")
        seconds = int(match.group(1)) * UNIT_S[match.group(2)]
    if not 0 < seconds <= MAX_WINDOW_S:
        raise _fail(f"{what} must be between 1 second and 366 days, got {value!r}")
    return seconds


def _zone(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail("default_timezone must be an IANA time zone such as Asia/Taipei")
    try:
        ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise _fail(f"default_timezone {value!r} is not a known IANA time zone") from None
    return value.strip()


def _quiet(value: Any, what: str) -> QuietHours:
    spec = _mapping(value, what, QUIET_KEYS)
    if "start" not in spec or "end" not in spec:
        raise _fail(f"{what} needs 'start' and 'end'")
    start, end = _clock(spec["start"], f"{what}.start"), _clock(spec["end"], f"{what}.end")
    if start == end:
        raise _fail(f"{what}: start and end are equal (remove quiet_hours for no window)")
    purposes = spec.get("purposes", ["marketing"])
    if not isinstance(purposes, list) or not purposes:
        raise _fail(f"{what}.purposes must be a non-empty list of {list(PURPOSES)}")
    return QuietHours(start, end, frozenset(
        _choice(p, PURPOSES, f"{what}.purposes entry") for p in purposes))


def _channels(section: Any) -> dict[str, Channel]:
    out = {}
    for name, spec in _mapping(section, "channels").items():
        what = f"channel {name!r}"
        _choice(name, CHANNELS, "a channel name")
        spec = _mapping(spec, what, CHANNEL_KEYS)
        quiet = spec.get("quiet_hours")
        out[name] = Channel(
            name,
            _quiet(quiet, f"{what} quiet_hours") if quiet is not None else None,
            _choice(spec.get("consent", "opt_in"), CONSENT_MODES, f"{what} consent"))
    return out


def _kind(spec: Any, what: str) -> tuple[str, str]:
    spec = _mapping(spec, what, KIND_KEYS)
    if "channel" not in spec or "purpose" not in spec:
        raise _fail(f"{what} needs 'channel' and 'purpose'")
    return (_choice(spec["channel"], CHANNELS, f"{what} channel"),
            _choice(spec["purpose"], PURPOSES, f"{what} purpose"))


def _actions(section: Any, known: Callable[[str, str], bool] | None
             ) -> dict[tuple[str, str], tuple[str, str]]:
    out = {}
    for dest, actions in _mapping(section, "actions").items():
        for action, spec in _mapping(actions, f"actions.{dest}").items():
            what = f"action {dest}.{action}"
            if known and not known(str(dest), str(action)):
                raise _fail(f"{what} is not a known destination action")
            out[(str(dest), str(action))] = _kind(spec, what)
    return out


def _caps(section: Any) -> tuple[Cap, ...]:
    if section is None:
        return ()
    if not isinstance(section, list):
        raise _fail("caps must be a list")
    caps, names = [], set()
    for i, spec in enumerate(section):
        name = spec.get("name") if isinstance(spec, Mapping) else None
        what = f"cap {name!r}" if name else f"cap #{i + 1}"
        spec = _mapping(spec, what, CAP_KEYS)
        if not isinstance(name, str) or not CAP_NAME.match(name):
            raise _fail(f"{what}: 'name' must be 1-40 characters of a-z, 0-9, _ and - "
                        "(it becomes a metric label)")
        if name in names:
            raise _fail(f"{what} appears twice")
        names.add(name)
        limit = spec.get("max")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise _fail(f"{what}: 'max' must be a whole number of at least 1")
        match = _mapping(spec.get("match"), f"{what} match", MATCH_KEYS)
        channel, purpose = match.get("channel"), match.get("purpose")
        per = spec.get("per")
        caps.append(Cap(
            name, parse_window(spec.get("window"), f"{what} window"), limit,
            _choice(channel, CHANNELS, f"{what} match.channel") if channel is not None else None,
            _choice(purpose, PURPOSES, f"{what} match.purpose") if purpose is not None else None,
            _choice(per, PER, f"{what} per") if per is not None else None))
    return tuple(caps)


def parse_policy(doc: Any, known: Callable[[str, str], bool] | None = None) -> Policy:
    """Validate the document; ConfigError naming the file and the entry on any mistake."""
    doc = _mapping(doc, "(the whole file)", SECTIONS)
    if "default_timezone" not in doc:
        raise _fail("needs default_timezone (an IANA zone such as Asia/Taipei)")
    return Policy(
        default_timezone=_zone(doc["default_timezone"]),
        channels=MappingProxyType(_channels(doc.get("channels"))),
        actions=MappingProxyType(_actions(doc.get("actions"), known)),
        caps=_caps(doc.get("caps")),
    )


@functools.lru_cache(maxsize=8)
def load_policy(path: str) -> Policy:
    """The parsed file (cached per path); ConfigError when unreadable or invalid."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise _fail(f"cannot be read: {exc.strerror}: {path}") from None
    except yaml.YAMLError as exc:
        raise _fail(f"is not valid YAML: {str(exc).splitlines()[0]} ({path})") from None
    from app.destinations.registry import has_action

    try:
        return parse_policy(doc, has_action)
    except ConfigError as exc:
        raise ConfigError(f"{exc} ({path})") from None


def message_kind(policy: Policy, delivery: Mapping[str, Any]) -> tuple[str, str] | None:
    """(channel, purpose) of a planned delivery, or None when it messages nobody.

    The routing target's declaration wins, then the policy's default for the action. A target
    that declares only a purpose takes the action's default channel; one that declares only a
    channel is marketing unless the action's default says otherwise (the safe reading)."""
    default = policy.actions.get((str(delivery.get("destination")), str(delivery.get("action"))))
    channel = delivery.get("channel") or (default[0] if default else None)
    if channel not in CHANNELS:
        return None
    purpose = delivery.get("purpose") or (default[1] if default else "marketing")
    return channel, purpose if purpose in PURPOSES else "marketing"


def without_quiet_hours(source: str, target: str) -> str:
    """Write `source` without any quiet hours to `target` and return its path.

    For the harnesses that prove other things on sample traffic (chaos, bench, the test
    suite's workers): their outcome must not depend on the time of day they run at. Consent and
    caps still apply."""
    doc = yaml.safe_load(Path(source).read_text()) or {}
    for channel in (doc.get("channels") or {}).values():
        if isinstance(channel, dict):
            channel.pop("quiet_hours", None)
    Path(target).write_text(yaml.safe_dump(doc, sort_keys=False))
    return target
