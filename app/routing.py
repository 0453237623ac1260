"""Routing rules as data: event type (+ source, + conditions) -> destination actions.

A new journey is a rule in `topics/routes.yaml`, not code. Rules are validated when loaded, so a
typo stops start-up with a message naming the rule instead of silently routing nothing.

A target that messages a person may declare its `channel` (app.safety.CHANNELS) and `purpose`
(marketing or transactional); `plan` copies them into the delivery, where they override the
action's default from topics/messaging.yaml (app/safety/policy.py `message_kind`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app.config import ConfigError
from app.destinations.mapping import get_path
from app.safety import CHANNELS, PURPOSES

_OPERATORS = {
    "equals": lambda v, x: v == x or (v is not None and str(v) == str(x)),
    "not_equals": lambda v, x: not (v == x or (v is not None and str(v) == str(x))),
    "in": lambda v, x: v in x or (v is not None and str(v) in {str(i) for i in x}),
    "exists": lambda v, x: (v not in (None, "", [], {})) == bool(x),
    "gte": lambda v, x: _num(v) is not None and _num(v) >= x,
    "lte": lambda v, x: _num(v) is not None and _num(v) <= x,
    "gt": lambda v, x: _num(v) is not None and _num(v) > x,
    "lt": lambda v, x: _num(v) is not None and _num(v) < x,
}


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Target:
    destination: str
    action: str
    params: Mapping[str, Any]
    channel: str | None = None
    purpose: str | None = None


@dataclass(frozen=True)
class Rule:
    name: str
    type_pattern: str
    source: str | None
    conditions: tuple[Callable[[Mapping[str, Any]], bool], ...]
    targets: tuple[Target, ...]

    def matches_kind(self, source: Any, etype: str) -> bool:
        if self.source and source != self.source:
            return False
        return etype == self.type_pattern or fnmatch.fnmatchcase(etype, self.type_pattern)

    def conditions_hold(self, envelope: Mapping[str, Any]) -> bool:
        return all(cond(envelope) for cond in self.conditions)


class Rules(list):
    """The rules in file order, with the ones each (source, type) can match remembered: most
    rules ask for one type, and matching every glob for every event cost more than routing."""

    MEMORY = 10_000  # distinct (source, type) pairs; journey names are open-ended

    def __init__(self, rules=()):
        super().__init__(rules)
        self._by_kind: dict[tuple[Any, str], list[Rule]] = {}

    @classmethod
    def of(cls, rules: list[Rule]) -> Rules:
        """`rules` itself when it already remembers, else a `Rules` over the same rules."""
        return rules if isinstance(rules, cls) else cls(rules)

    def for_kind(self, source: Any, etype: str) -> list[Rule]:
        found = self._by_kind.get((source, etype))
        if found is None:
            if len(self._by_kind) >= self.MEMORY:
                self._by_kind.clear()
            found = self._by_kind[(source, etype)] = [
                rule for rule in self if rule.matches_kind(source, etype)]
        return found


def _condition(rule: str, spec: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bool]:
    path = spec.get("path")
    ops = [k for k in spec if k != "path"]
    if not path or len(ops) != 1 or ops[0] not in _OPERATORS:
        raise ConfigError(
            f"ROUTES_FILE rule {rule!r}: a condition needs 'path' and one of {sorted(_OPERATORS)}"
        )
    op, expected = _OPERATORS[ops[0]], spec[ops[0]]
    return lambda env: op(get_path(env, path), expected)


def _message_kind(rule: str, target: Mapping[str, Any]) -> tuple[str | None, str | None]:
    channel, purpose = target.get("channel"), target.get("purpose")
    if channel is not None and channel not in CHANNELS:
        raise ConfigError(f"ROUTES_FILE rule {rule!r}: channel must be one of {list(CHANNELS)}, "
                          f"got {channel!r}")
    if purpose is not None and purpose not in PURPOSES:
        raise ConfigError(f"ROUTES_FILE rule {rule!r}: purpose must be one of {list(PURPOSES)}, "
                          f"got {purpose!r}")
    return channel, purpose


def parse_rules(doc: Any, known: Callable[[str, str], bool] | None = None) -> Rules:
    if not isinstance(doc, Mapping) or not isinstance(doc.get("routes"), list):
        raise ConfigError("ROUTES_FILE must hold a 'routes' list")
    rules, names = [], set()
    for i, entry in enumerate(doc["routes"]):
        name = str(entry.get("name") or f"route-{i}")
        if name in names:
            raise ConfigError(f"ROUTES_FILE rule {name!r} appears twice")
        names.add(name)
        when = entry.get("when") or {}
        if not when.get("type"):
            raise ConfigError(f"ROUTES_FILE rule {name!r} has no when.type")
        targets = []
        for target in entry.get("deliver") or []:
            dest, action = target.get("destination"), target.get("action")
            if not dest or not action:
                raise ConfigError(f"ROUTES_FILE rule {name!r}: deliver needs destination and action")
            if known and not known(dest, action):
                raise ConfigError(f"ROUTES_FILE rule {name!r}: unknown action {dest}.{action}")
            targets.append(Target(dest, action, target.get("params") or {},
                                  *_message_kind(name, target)))
        if not targets:
            raise ConfigError(f"ROUTES_FILE rule {name!r} delivers nowhere")
        conditions = tuple(_condition(name, c) for c in when.get("if") or [])
        rules.append(Rule(name, when["type"], when.get("source"), conditions, tuple(targets)))
    return Rules(rules)


def load_rules(path: str) -> Rules:
    from app.destinations.registry import has_action

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"ROUTES_FILE cannot be read: {exc}") from None
    return parse_rules(doc, has_action)


def delivery_id(destination: str, action: str, event_id: str, route: str,
                resend: str | None = None) -> str:
    """The idempotency key of a delivery. A deliberate resend (`relay replay --resend`) gets its
    own suffix, so the ledger treats it as new; anything else repeats the same id."""
    base = f"{destination}:{action}:{event_id}:{route}"
    return f"{base}#resend:{resend}" if resend else base


def plan(rules: list[Rule], envelope: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every delivery an envelope asks for, one per (rule, target)."""
    out = []
    resend = (envelope.get("trace") or {}).get("resend")
    source, etype = envelope.get("source"), envelope.get("type", "")
    for rule in Rules.of(rules).for_kind(source, etype):
        if not rule.conditions_hold(envelope):
            continue
        for target in rule.targets:
            delivery = {
                "delivery_id": delivery_id(
                    target.destination, target.action, envelope["event_id"], rule.name, resend),
                "destination": target.destination,
                "action": target.action,
                "event_id": envelope["event_id"],
                "customer_key": envelope.get("customer_key", ""),
                "route": rule.name,
                "params": target.params,
                "envelope": envelope,
                "attempt": 0,
                "not_before": 0.0,
            }
            if target.channel:
                delivery["channel"] = target.channel
            if target.purpose:
                delivery["purpose"] = target.purpose
            out.append(delivery)
    return out
