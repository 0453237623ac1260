"""Every destination by name, and the action look-up the router and the sinks use."""

from __future__ import annotations

from app.destinations import air, attentive, braze, insider, maac, sessionm
from app.destinations.base import Action, Destination

DESTINATIONS: dict[str, Destination] = {
    module.DESTINATION.name: module.DESTINATION
    for module in (maac, braze, attentive, sessionm, insider, air)
}


def get_action(destination: str, action: str) -> Action:
    """The action object; KeyError naming what is unknown."""
    try:
        dest = DESTINATIONS[destination]
    except KeyError:
        raise KeyError(f"unknown destination {destination!r}") from None
    try:
        return dest.actions[action]
    except KeyError:
        raise KeyError(f"unknown action {destination}.{action}") from None


def has_action(destination: str, action: str) -> bool:
    """Whether `destination.action` exists (configuration files are checked against this)."""
    dest = DESTINATIONS.get(destination)
    return dest is not None and action in dest.actions


def is_idempotent(destination: str, action: str) -> bool:
    """Whether `destination.action` may be sent twice without effect (its `idempotent` flag);
    False for an unknown one."""
    dest = DESTINATIONS.get(destination)
    found = dest.actions.get(action) if dest is not None else None
    return bool(found and found.idempotent)
