"""Configuration from environment variables.

Every setting has a documented default (see README's configuration table). A wrong value stops
start-up with a `ConfigError` whose message names the variable, so the CLI can print one line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import urlparse

from app.broker import broker_is_tansu

REPO_ROOT = Path(__file__).resolve().parent.parent
TOPICS_DIR = REPO_ROOT / "topics"

# Names a worker accepts for EVENT_LOOP, and the `mode.loop` backend each one selects.
EVENT_LOOPS = {"uvloop": "uvloop", "asyncio": "aio"}

DESTINATIONS = ("maac", "braze", "attentive", "sessionm", "insider", "air")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the variable."""


@dataclass(frozen=True)
class DestinationConfig:
    """Where a destination lives and how to authenticate. Secrets never reach logs."""

    base_url: str = ""
    token: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)
    rate_scale: float = 1.0
    batch_window_s: float | None = None  # <DEST>_BATCH_WINDOW_S; SINK_BATCH_WINDOW_S when unset
    concurrency: int | None = None  # <DEST>_CONCURRENCY; sized from the limits when unset

    @property
    def configured(self) -> bool:
        return bool(self.base_url and self.token)


@dataclass(frozen=True)
class Settings:
    broker_url: str = ""
    app_id: str = "loyalty-relay"
    store: str = "memory://"
    partitions: int = 4
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    data_dir: str = "var/relay-data"
    routes_file: str = str(TOPICS_DIR / "routes.yaml")
    catalog_file: str = str(TOPICS_DIR / "catalog.yaml")
    segments_file: str = str(TOPICS_DIR / "segments.yaml")
    messaging_file: str = str(TOPICS_DIR / "messaging.yaml")
    log_level: str = "info"
    default_region: str = "TW"
    air_customer_identity: str = "CUSTOMER_ID"
    maac_webhook_secret: str = ""
    admin_token: str = ""
    sink_batch_max: int = 1000
    sink_batch_window_s: float = 0.05
    sink_behind_window_s: float = 1.0
    stream_stall_s: float = 300.0
    retry_attempts: int = 3
    retry_base_s: float = 0.2
    retry_max_s: float = 5.0
    request_timeout_s: float = 10.0
    fetch_max_wait_ms: int = 500
    event_loop: str = "uvloop"
    topic_retry_max: int = 5
    resend_idempotent_after_crash: bool = False
    identity_shortcut: bool = True
    breaker_threshold: int = 20
    breaker_cooldown_s: float = 30.0
    emit_outcomes: bool = True
    group_instance_id: str = ""
    faust_metrics: bool = False
    wallet_cache_s: float = 30.0
    wallet_concurrency: int = 8
    wallet_timeout_s: float = 2.0
    wallet_fallback: str = "send"
    unify_keys: tuple[str, ...] = ("line_uid", "email", "phone")
    ambiguous_key_limit: int = 5
    fast_recovery_min: int = 10_000
    defer_tick_s: float = 5.0
    rocksdb_write_buffer_mb: int = 64
    rocksdb_block_cache_mb: int = 64
    profile_attributes: tuple[str, ...] = ("first_name", "last_name", "tier", "language",
                                           "email_optin", "sms_optin", "line_optin")
    destinations: Mapping[str, DestinationConfig] = field(default_factory=dict)

    def destination(self, name: str) -> DestinationConfig:
        return self.destinations.get(name, DestinationConfig())

    def batch_window_s(self, name: str, gathers: bool = True) -> float:
        """How long a short batch of `name`'s sink waits for more: <DEST>_BATCH_WINDOW_S, else
        SINK_BATCH_WINDOW_S where requests carry several deliveries (`gathers`), else nothing:
        one delivery per request leaves nothing to gather, and the wait was only latency
        (Attentive's deliveries: 95-109 ms p50 in the sink stage with it, 45-52 without)."""
        own = self.destination(name).batch_window_s
        if own is not None:
            return own
        return self.sink_batch_window_s if gathers else 0.0

    def with_destinations(self, **dests: DestinationConfig) -> Settings:
        merged = dict(self.destinations)
        merged.update(dests)
        return replace(self, destinations=merged)


# Per-destination variables: base URL, the credential, and any extra ones.
DESTINATION_VARS: dict[str, dict[str, str]] = {
    "maac": {"base_url": "MAAC_BASE_URL", "token": "MAAC_TOKEN"},
    "braze": {"base_url": "BRAZE_BASE_URL", "token": "BRAZE_API_KEY"},
    "attentive": {
        "base_url": "ATTENTIVE_BASE_URL",
        "token": "ATTENTIVE_API_KEY",
        "sign_up_source_id": "ATTENTIVE_SIGNUP_SOURCE_ID",
    },
    "sessionm": {
        "base_url": "SESSIONM_CORE_URL",
        "token": "SESSIONM_API_SECRET",
        "api_key": "SESSIONM_API_KEY",
        "connect_url": "SESSIONM_CONNECT_URL",
        "offers_auth": "SESSIONM_OFFERS_AUTH",
        "retailer_id": "SESSIONM_RETAILER_ID",
    },
    "insider": {
        "base_url": "INSIDER_BASE_URL",
        "token": "INSIDER_TOKEN",
        "partner": "INSIDER_PARTNER",
    },
    "air": {"base_url": "AIR_WALLET_URL", "token": "AIR_SECRET", "client_id": "AIR_CLIENT_ID"},
}

URL_KEYS = {"base_url", "connect_url"}


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _choice(env: Mapping[str, str], name: str, default: str, choices) -> str:
    """One of `choices`, case-insensitive; a wrong value is a ConfigError listing them."""
    value = env.get(name, default).strip().lower() or default
    if value not in choices:
        *first, last = choices
        raise ConfigError(f"{name} must be {', '.join(first)} or {last}, got {value!r}")
    return value


def _url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    parsed = urlparse(raw)
    if parsed.scheme not in schemes or not parsed.netloc:
        raise ConfigError(f"{name} must be a {'/'.join(schemes)} URL, got {raw!r}")
    return raw.rstrip("/")


def _file(name: str, raw: str) -> str:
    if not Path(raw).is_file():
        raise ConfigError(f"{name} points at a missing file: {raw}")
    return raw


def _unify_keys(env: Mapping[str, str]) -> tuple[str, ...]:
    from app.identity.keys import parse_unify_keys

    raw = env.get("UNIFY_KEYS", "").strip() or "line_uid,email,phone"
    try:
        return parse_unify_keys(raw)
    except ValueError as exc:
        raise ConfigError(f"UNIFY_KEYS: {exc}") from None


def _names(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    return tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))


def load_destinations(env: Mapping[str, str]) -> dict[str, DestinationConfig]:
    dests = {}
    for dest, names in DESTINATION_VARS.items():
        values = {}
        for key, var in names.items():
            raw = env.get(var, "").strip()
            if raw and key in URL_KEYS:
                raw = _url(var, raw, ("http", "https"))
            values[key] = raw
        scale = _float(env, f"{dest.upper()}_RATE_SCALE", 1.0, 0.001, 100.0)
        window_var = f"{dest.upper()}_BATCH_WINDOW_S"
        window = _float(env, window_var, 0.0, 0.0, 60.0) if env.get(window_var, "").strip() \
            else None
        concurrency_var = f"{dest.upper()}_CONCURRENCY"
        concurrency = _int(env, concurrency_var, 8, 1, 1024) \
            if env.get(concurrency_var, "").strip() else None
        base_url = values.pop("base_url")
        token = values.pop("token")
        dests[dest] = DestinationConfig(base_url, token, values, scale, window, concurrency)
    return dests


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raises ConfigError naming the first bad variable."""
    env = os.environ if env is None else env
    broker = env.get("BROKER_URL", "").strip()
    if broker:
        broker = ";".join(
            _url("BROKER_URL", part.strip(), ("kafka", "aiokafka")) for part in broker.split(";")
        )
    store = env.get("STORE", "memory://").strip() or "memory://"
    if store not in {"memory://", "rocksdb://"}:
        raise ConfigError(f"STORE must be memory:// or rocksdb://, got {store!r}")
    log_level = _choice(env, "LOG_LEVEL", "info", ("debug", "info", "warning", "error"))
    region = env.get("DEFAULT_REGION", "TW").strip().upper() or "TW"
    if len(region) != 2 or not region.isalpha():
        raise ConfigError(f"DEFAULT_REGION must be a two-letter country code, got {region!r}")
    segments_file = _file("SEGMENTS_FILE", env.get("SEGMENTS_FILE", "") or Settings.segments_file)
    from app.destinations.sessionm.segments import load_segments

    load_segments(segments_file)  # ConfigError naming the segment when it is wrong
    messaging_file = _file("MESSAGING_FILE", env.get("MESSAGING_FILE", "") or Settings.messaging_file)
    from app.safety.policy import load_policy

    load_policy(messaging_file)  # ConfigError naming the channel, action or cap when it is wrong
    event_loop = _choice(env, "EVENT_LOOP", "uvloop", tuple(EVENT_LOOPS))
    wallet_fallback = _choice(env, "WALLET_FALLBACK", "send", ("send", "retry"))
    destinations = load_destinations(env)
    destinations["sessionm"] = replace(destinations["sessionm"], extra={
        **destinations["sessionm"].extra, "segments_file": segments_file})
    return Settings(
        broker_url=broker,
        app_id=env.get("APP_ID", "loyalty-relay").strip() or "loyalty-relay",
        store=store,
        partitions=_int(env, "PARTITIONS", 4, 1, 1024),
        web_host=env.get("WEB_HOST", "127.0.0.1").strip() or "127.0.0.1",
        web_port=_int(env, "WEB_PORT", 6066, 0, 65535),
        data_dir=env.get("DATA_DIR", "var/relay-data").strip() or "var/relay-data",
        routes_file=_file("ROUTES_FILE", env.get("ROUTES_FILE", "") or Settings.routes_file),
        catalog_file=_file("CATALOG_FILE", env.get("CATALOG_FILE", "") or Settings.catalog_file),
        log_level=log_level,
        default_region=region,
        air_customer_identity=(env.get("AIR_CUSTOMER_IDENTITY", "CUSTOMER_ID").strip().upper()
                               or "CUSTOMER_ID"),
        maac_webhook_secret=env.get("MAAC_WEBHOOK_SECRET", ""),
        admin_token=env.get("ADMIN_TOKEN", ""),
        sink_batch_max=_int(env, "SINK_BATCH_MAX", 1000, 1, 10000),
        sink_batch_window_s=_float(env, "SINK_BATCH_WINDOW_S", 0.05, 0.0, 60.0),
        sink_behind_window_s=_float(env, "SINK_BEHIND_WINDOW_S", 1.0, 0.0, 60.0),
        stream_stall_s=_float(env, "STREAM_STALL_S", 300.0, 1.0, 86400.0),
        retry_attempts=_int(env, "RETRY_ATTEMPTS", 3, 1, 20),
        retry_base_s=_float(env, "RETRY_BASE_S", 0.2, 0.0, 60.0),
        retry_max_s=_float(env, "RETRY_MAX_S", 5.0, 0.0, 600.0),
        request_timeout_s=_float(env, "REQUEST_TIMEOUT_S", 10.0, 0.1, 300.0),
        # Kafka answers a waiting fetch as soon as records arrive; the embedded broker only when
        # the wait is over, so there every hop can cost the whole wait.
        fetch_max_wait_ms=_int(env, "FETCH_MAX_WAIT_MS", 20 if broker_is_tansu(env) else 500,
                               1, 10000),
        event_loop=event_loop,
        topic_retry_max=_int(env, "TOPIC_RETRY_MAX", 5, 0, 100),
        breaker_threshold=_int(env, "BREAKER_THRESHOLD", 20, 1, 100000),
        resend_idempotent_after_crash=_bool(env, "RESEND_IDEMPOTENT_AFTER_CRASH", False),
        identity_shortcut=_bool(env, "IDENTITY_SHORTCUT", True),
        breaker_cooldown_s=_float(env, "BREAKER_COOLDOWN_S", 30.0, 0.1, 3600.0),
        emit_outcomes=_bool(env, "EMIT_OUTCOMES", True),
        group_instance_id=env.get("GROUP_INSTANCE_ID", "").strip(),
        faust_metrics=_bool(env, "FAUST_METRICS", False),
        unify_keys=_unify_keys(env),
        ambiguous_key_limit=_int(env, "AMBIGUOUS_KEY_LIMIT", 5, 2, 100000),
        fast_recovery_min=_int(env, "FAST_RECOVERY_MIN", 10_000, 0, 10**12),
        defer_tick_s=_float(env, "DEFER_TICK_S", 5.0, 0.1, 3600.0),
        rocksdb_write_buffer_mb=_int(env, "ROCKSDB_WRITE_BUFFER_MB", 64, 8, 65536),
        rocksdb_block_cache_mb=_int(env, "ROCKSDB_BLOCK_CACHE_MB", 64, 1, 65536),
        profile_attributes=_names(env, "PROFILE_ATTRIBUTES", Settings.profile_attributes),
        segments_file=segments_file,
        messaging_file=messaging_file,
        wallet_cache_s=_float(env, "WALLET_CACHE_S", 30.0, 0.0, 3600.0),
        wallet_concurrency=_int(env, "WALLET_CONCURRENCY", 8, 1, 256),
        wallet_timeout_s=_float(env, "WALLET_TIMEOUT_S", 2.0, 0.1, 60.0),
        wallet_fallback=wallet_fallback,
        destinations=destinations,
    )


def setting_names() -> list[str]:
    return [f.name for f in fields(Settings)]
