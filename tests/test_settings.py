"""Settings refuse nonsense: every bad value is a ConfigError that names its variable."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from storepulse.cli import parser
from storepulse.errors import ConfigError
from storepulse.settings import MIN_MAC_HASH_KEY_BYTES, TOPIC_VARIABLES, VARIABLES, Settings

REFUSED = [
    ("STOREPULSE_METRICS_PORT", "-1"),
    ("STOREPULSE_METRICS_PORT", "65536"),
    ("STOREPULSE_METRICS_PORT", "9464.5"),
    ("STOREPULSE_METRICS_ADDR", "0.0.0.0:9464"),
    ("STOREPULSE_METRICS_ADDR", "not an address"),
    ("STOREPULSE_ALLOWED_LATENESS_S", "-1"),
    ("STOREPULSE_ALLOWED_LATENESS_S", "nan"),
    ("STOREPULSE_ALLOWED_LATENESS_S", "ten"),
    *[(name, value) for name in ("STOREPULSE_MAX_EVENT_AGE_S", "STOREPULSE_MAX_CLOCK_SKEW_S",
                                 "STOREPULSE_IDLE_PARTITION_S", "STOREPULSE_CATALOG_REFRESH_S")
      for value in ("0", "-5", "inf", "nan")],
    ("STOREPULSE_MAX_MESSAGE_BYTES", "0"),
    ("STOREPULSE_DEADLETTER_RAW_BYTES", "-1"),
    *[(name, value) for name in TOPIC_VARIABLES
      for value in (".", "..", "wifi probes", "wifi/probes", "ünïcode", "t" * 250)],
    ("STOREPULSE_REDIS_URL", "localhost:6379"),
    ("STOREPULSE_REDIS_URL", "http://localhost:6379/0"),
    ("STOREPULSE_REDIS_URL", "redis://localhost:99999/0"),
    ("STOREPULSE_REDIS_URL", "redis://localhost:6379/zero"),
    ("STOREPULSE_REDIS_URL", "redis:///0"),
    ("STOREPULSE_REDIS_URL", "unix://"),
    ("STOREPULSE_KAFKA_BOOTSTRAP", "kafka:0"),
    ("STOREPULSE_KAFKA_BOOTSTRAP", "kafka:70000"),
    ("STOREPULSE_KAFKA_BOOTSTRAP", "kafka:ninety"),
    ("STOREPULSE_KAFKA_BOOTSTRAP", "k1:9092,,k2:9092"),
    ("STOREPULSE_KAFKA_CONFIG", "bootstrap.servers=other:9092"),
    ("STOREPULSE_KAFKA_CONFIG", "security.protocol"),
    ("STOREPULSE_GRAFANA_URL", "grafana:3000"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "value"), REFUSED)
def test_a_value_that_makes_no_sense_is_refused_naming_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({name: value})
    assert str(refused.value).startswith(name), str(refused.value)


ACCEPTED = [
    ("STOREPULSE_METRICS_PORT", "0", "metrics_port", 0),
    ("STOREPULSE_METRICS_PORT", "65535", "metrics_port", 65535),
    ("STOREPULSE_METRICS_ADDR", "::", "metrics_addr", "::"),
    ("STOREPULSE_METRICS_ADDR", "engine-0.local", "metrics_addr", "engine-0.local"),
    ("STOREPULSE_ALLOWED_LATENESS_S", "0", "allowed_lateness_s", 0.0),  # closes at the minute's end
    ("STOREPULSE_IDLE_PARTITION_S", "0.5", "idle_partition_s", 0.5),
    ("STOREPULSE_MAX_MESSAGE_BYTES", "1", "max_message_bytes", 1),
    ("STOREPULSE_TOPIC_PROBES", "t" * 249, "topic_probes", "t" * 249),
    ("STOREPULSE_TOPIC_PROBES", "mall-7_wifi.probes.v2", "topic_probes", "mall-7_wifi.probes.v2"),
    ("STOREPULSE_REDIS_URL", "redis://:pw@redis:6379/2", "redis_url", "redis://:pw@redis:6379/2"),
    ("STOREPULSE_REDIS_URL", "rediss://redis.internal", "redis_url", "rediss://redis.internal"),
    ("STOREPULSE_REDIS_URL", "unix:///run/redis.sock?db=0", "redis_url", "unix:///run/redis.sock?db=0"),
    ("STOREPULSE_REDIS_URL", "redis+cluster://node1:7000", "redis_url", "redis+cluster://node1:7000"),
    ("STOREPULSE_KAFKA_BOOTSTRAP", "[::1]:9092,SASL_SSL://k2:9093,k3", "kafka_bootstrap",
     "[::1]:9092,SASL_SSL://k2:9093,k3"),
    ("STOREPULSE_GRAFANA_URL", "https://grafana.example/sub", "grafana_url", "https://grafana.example/sub"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "value", "field", "expected"), ACCEPTED)
def test_the_edges_of_each_range_are_accepted(name: str, value: str, field: str, expected: object) -> None:
    assert getattr(Settings.from_env({name: value}), field) == expected


def test_every_number_has_a_range_check() -> None:
    # A numeric setting added later without a check would take -1 or nan silently.
    types = {f.name: str(f.type) for f in dataclasses.fields(Settings)}
    numeric = [v.name for v in VARIABLES if types[v.field].startswith(("int", "float"))]
    assert numeric and all(v.check is not None for v in VARIABLES if v.name in numeric)


def test_checks_hold_for_settings_made_in_code_too() -> None:
    with pytest.raises(ConfigError, match="^STOREPULSE_IDLE_PARTITION_S"):
        Settings(idle_partition_s=0)
    with pytest.raises(ConfigError, match="^STOREPULSE_METRICS_PORT"):
        dataclasses.replace(Settings(), metrics_port=-1)


def test_a_password_in_a_refused_value_is_not_repeated() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"STOREPULSE_REDIS_URL": "redis://app:s3cret@redis:6379/db0"})
    assert "s3cret" not in str(refused.value) and "***" in str(refused.value)
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"STOREPULSE_KAFKA_CONFIG": "sasl.mechanism=PLAIN,sasl.password=s3cret"})
    assert "s3cret" not in str(refused.value) and "STOREPULSE_KAFKA_SASL_PASSWORD" in str(refused.value)


def test_a_short_mac_hash_key_is_refused_and_the_message_says_how_to_make_one() -> None:
    short = "x" * (MIN_MAC_HASH_KEY_BYTES - 1)
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"STOREPULSE_MAC_HASH_KEY": short})
    message = str(refused.value)
    assert message.startswith("STOREPULSE_MAC_HASH_KEY is 15 bytes") and "openssl rand -hex 32" in message
    assert short not in message
    key = "k" * MIN_MAC_HASH_KEY_BYTES
    assert Settings.from_env({"STOREPULSE_MAC_HASH_KEY": key}).require_mac_hash_key() == key.encode()


@pytest.mark.parametrize(("first", "second"), list(itertools.combinations(TOPIC_VARIABLES, 2)))
def test_every_topic_is_its_own(first: str, second: str) -> None:
    with pytest.raises(ConfigError, match=f"^{first} and {second} are both 'shared.topic'"):
        Settings.from_env({first: "shared.topic", second: "shared.topic"})
    # Kafka refuses a topic whose name differs from another's only in '.' against '_'.
    with pytest.raises(ConfigError, match=f"^{first} and {second}"):
        Settings.from_env({first: "shared.topic", second: "shared_topic"})


def test_metrics_port_zero_is_off_for_every_process_of_a_cluster() -> None:
    assert [Settings(metrics_port=0).metrics_port_of(p) for p in range(4)] == [0, 0, 0, 0]
    assert [Settings(metrics_port=9464).metrics_port_of(p) for p in range(3)] == [9464, 9465, 9466]
    with pytest.raises(ConfigError, match="^STOREPULSE_METRICS_PORT: 65535 \\+ process id 1"):
        Settings(metrics_port=65535).metrics_port_of(1)


def test_redis_url_is_required_by_name() -> None:
    with pytest.raises(ConfigError, match="^STOREPULSE_REDIS_URL is not set: `run` needs"):
        Settings().require_redis_url("run")


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--workers", "0"],
        ["run", "--process-id", "-1", "--addresses", "a:1"],
        ["run", "--snapshot-s", "0"],
        ["run", "--snapshot-s", "nan"],
        ["run", "--create-topics", "0"],
        ["simulate", "--rate", "0"],
        ["demo", "--speedup", "-1"],
        ["run", "--workers", "two"],
    ],
)
def test_flags_that_make_no_sense_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and argv[1] in err and repr(argv[2]).strip("'") in err, err
