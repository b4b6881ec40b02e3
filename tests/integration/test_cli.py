"""`storepulse simulate` and `storepulse catalog load|export` as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from connectors.catalog import Catalog
from simulators.mall import MallSimulator
from simulators.scenario import Scenario
from state.catalog import CatalogStore
from tests.fixtures.servers import free_port


def storepulse(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "storepulse.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_simulate_writes_the_scenario_and_loads_its_catalog(
    kafka_broker, kafka_topic_factory, redis_server, redis_client
):
    topics = {name: kafka_topic_factory(2) for name in ("probes", "transactions", "members")}
    env = {
        "STOREPULSE_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "STOREPULSE_REDIS_URL": redis_server.url,
        "STOREPULSE_TOPIC_PROBES": topics["probes"],
        "STOREPULSE_TOPIC_TRANSACTIONS": topics["transactions"],
        "STOREPULSE_TOPIC_MEMBERS": topics["members"],
    }
    done = storepulse("simulate", "--scenario", "smoke", "--seed", "3", "--load-catalog", env=env)
    assert done.returncode == 0, done.stderr
    sim = MallSimulator(Scenario.load("smoke"), 3)
    expected = {"wifi.probes": "probes", "pos.transactions": "transactions", "members.events": "members"}
    for logical, name in expected.items():
        want = sorted(e.value for e in sim.events() if e.topic == logical and len(e.value) < 1 << 20)
        assert sorted(r.value for r in kafka_broker.read_topic(topics[name])) == want
    assert CatalogStore(redis_client).load() == sim.catalog


def test_catalog_export_then_load_round_trips(redis_server, redis_client, tmp_path: Path):
    env = {"STOREPULSE_REDIS_URL": redis_server.url}
    exported = tmp_path / "catalog.yaml"
    assert storepulse("catalog", "export", "--scenario", "demo", "-o", str(exported), env=env).returncode == 0
    loaded = storepulse("catalog", "load", str(exported), env=env)
    assert loaded.returncode == 0, loaded.stderr
    assert "10 stores" in loaded.stdout
    assert CatalogStore(redis_client).load() == Catalog.from_yaml(exported.read_text())
    broken = tmp_path / "broken.yaml"
    broken.write_text("stores: [{store_id: S1}]\n")
    failed = storepulse("catalog", "load", str(broken), env=env)
    assert failed.returncode == 2 and "catalog YAML is invalid" in failed.stderr


def test_catalog_load_of_a_missing_or_unreadable_file_is_a_clear_error(tmp_path: Path):
    env = {"STOREPULSE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}  # never reached
    missing = storepulse("catalog", "load", str(tmp_path / "nope.yaml"), env=env)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"catalog file {tmp_path / 'nope.yaml'} does not exist" in missing.stderr
    assert "catalog export" in missing.stderr  # says how to get one
    directory = storepulse("catalog", "load", str(tmp_path), env=env)
    assert directory.returncode == 2 and "Traceback" not in directory.stderr
    assert f"cannot read catalog file {tmp_path}: Is a directory" in directory.stderr


def test_run_checks_redis_before_anything_else(tmp_path: Path):
    # Kafka is nowhere either: `run` must stop at Redis, before it builds the dataflow.
    env = {
        "STOREPULSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "STOREPULSE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "STOREPULSE_MAC_HASH_KEY": "k" * 32,
        "STOREPULSE_METRICS_PORT": "0",
    }
    down = storepulse("run", "--recovery-dir", str(tmp_path / "recovery"), env=env)
    assert down.returncode == 2 and "Traceback" not in down.stderr, down.stderr
    [error] = [line for line in down.stderr.splitlines() if line.startswith("storepulse: error:")]
    assert "did not answer PING" in error and "STOREPULSE_REDIS_URL" in error
    assert not (tmp_path / "recovery").exists()  # nothing was started
    unset = storepulse("run", env={**env, "STOREPULSE_REDIS_URL": ""})
    assert unset.returncode == 2
    assert "storepulse: error: STOREPULSE_REDIS_URL is not set: `run` needs a Redis server" in unset.stderr


def test_nonsense_settings_stop_every_command_naming_the_variable():
    for args in (["run"], ["simulate"], ["catalog", "load", "--scenario", "demo"]):
        done = storepulse(*args, env={"STOREPULSE_IDLE_PARTITION_S": "0"})
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert "storepulse: error: STOREPULSE_IDLE_PARTITION_S: 0.0 is not a duration" in done.stderr
