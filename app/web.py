"""The worker's web endpoints: health, readiness, metrics, and the MAAC webhook.

The webhook verifies `CrescLab-Signature` (hex HMAC-SHA256 of the raw body with the share secret)
before anything else, de-duplicates on `CrescLab-Idempotency-Key`, and publishes the raw envelope
to `maac.results`, where the normal ingress path normalizes it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict

import orjson
import structlog
from faust.web import View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import metrics
from app.config import Settings

log = structlog.get_logger(__name__)


def verify_signature(body: bytes, signature: str, secret: str) -> bool:
    if not secret or not signature:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature.strip().lower())


def _line_uid(body: bytes) -> str:
    try:
        data = orjson.loads(body).get("data")
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    uid = data.get("line_uid") if isinstance(data, dict) else None
    return uid if isinstance(uid, str) else ""


class SeenKeys:
    """A bounded memory of recent idempotency keys (MAAC retries within seconds)."""

    def __init__(self, size: int = 100_000):
        self.size = size
        self._keys: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str) -> bool:
        """True when the key is new."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self.size:
            self._keys.popitem(last=False)
        return True


def install(app, relay) -> None:
    settings: Settings = relay.settings
    results = app.topic("maac.results", key_serializer="raw", value_serializer="raw")
    seen = SeenKeys()

    @app.page("/healthz")
    async def healthz(web, request):
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web, request):
        recovery = app.tables.recovery
        ready = (not app.rebalancing) and recovery.completed.is_set()
        return web.json({"ready": ready}, status=200 if ready else 503)

    @app.page("/_relay/tables")
    async def table_sizes(web, request):
        """Key counts of the worker's tables (no keys or values: those are personal data)."""
        return web.json({name: len(table) for name, table in relay.tables.items()})

    @app.page("/profiles/{kind}/{value}")
    class ProfileView(View):
        async def get(self, request, kind, value):
            from app.agents.identity import profile_view

            auth = request.headers.get("Authorization", "")
            admin = bool(settings.admin_token) and hmac.compare_digest(
                auth.encode(), f"Bearer {settings.admin_token}".encode())
            status, body = profile_view(relay, kind, value, admin)
            return self.json(body, status=status)

    @app.page("/metrics")
    async def metrics_page(web, request):
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/webhooks/maac")
    class MaacWebhook(View):
        async def post(self, request):
            body = await request.read()
            signature = request.headers.get("CrescLab-Signature", "")
            if not verify_signature(body, signature, settings.maac_webhook_secret):
                metrics.WEBHOOKS.labels("bad_signature").inc()
                return self.json({"detail": "invalid signature"}, status=401)
            key = request.headers.get("CrescLab-Idempotency-Key", "")
            if key and not seen.add(key):
                metrics.WEBHOOKS.labels("duplicate").inc()
                return self.json({"status": "duplicate"})
            headers = {"CrescLab-Idempotency-Key": key.encode()} if key else {}
            # Keyed by LINE uid (topics/catalog.yaml): one LINE user's results stay in order.
            uid = _line_uid(body)
            await results.send(key=(uid or key).encode() or None, value=body, headers=headers)
            metrics.WEBHOOKS.labels("accepted").inc()
            return self.json({"status": "ok"})
