"""Customer-safe messaging: consent, quiet hours and cross-channel frequency caps (pure logic).

The relay sees every message a customer is about to get on every channel, so it is the one place
that can hold back what no single platform can: a marketing text to someone who unsubscribed in
another system, a fourth campaign in a day across LINE, SMS and Braze, an SMS at 02:00 local.
Rules are data (`topics/messaging.yaml`, `policy.py`); `decide.py` turns a planned delivery, the
profile's consent (`consent.py`) and contact history (`caps.py`) and the customer's time zone
(`quiet.py`) into send, suppress or defer. Nothing here does I/O: the route stage applies it.
"""

from __future__ import annotations

# Channels a message can go out on. "braze" is a Braze campaign or canvas: Braze picks the
# channel (e-mail, push, ...), so the relay only knows it is a Braze message.
CHANNELS = ("sms", "line", "email", "push", "braze")
PURPOSES = ("marketing", "transactional")
