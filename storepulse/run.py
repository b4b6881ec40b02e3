"""``storepulse run``, ``simulate`` and ``catalog``: the commands that talk to real servers."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import timedelta
from pathlib import Path

from connectors.catalog import Catalog
from storepulse import metrics
from storepulse.errors import ConfigError
from storepulse.settings import Settings

log = logging.getLogger("storepulse")


def run_engine(
    settings: Settings,
    *,
    workers: int,
    process_id: int | None,
    addresses: str | None,
    snapshot_s: float,
    create_topics: int | None,
) -> int:
    """Run this process of the engine's bytewax cluster until it is stopped."""
    from bytewax._bytewax import cli_main, init_db_dir
    from bytewax.recovery import RecoveryConfig

    from flows.engine import build_flow

    if (process_id is None) != (addresses is None):
        raise ConfigError("-i/--process-id and -a/--addresses go together (one address per process)")
    if create_topics:
        from connectors.kafka import ensure_topics

        names = (settings.topic_probes, settings.topic_transactions, settings.topic_members, settings.topic_deadletter)
        ensure_topics(settings.kafka_client_config(), {name: create_topics for name in names})
    flow = build_flow(settings)
    port = settings.metrics_port + (process_id or 0)
    metrics.serve(port, addr=settings.metrics_addr)
    recovery = None
    if settings.recovery_dir is not None:
        _init_recovery(settings.recovery_dir, init_db_dir, clustered=process_id is not None)
        recovery = RecoveryConfig(str(settings.recovery_dir))
    log.info(
        "engine starting: process %s, %d worker(s), metrics on :%d, recovery %s",
        process_id or 0,
        workers,
        port,
        settings.recovery_dir or "off",
    )
    cli_main(
        flow,
        workers_per_process=workers,
        process_id=process_id,
        addresses=addresses.split(";") if addresses else None,
        epoch_interval=timedelta(seconds=snapshot_s),
        recovery_config=recovery,
    )
    return 0


def _init_recovery(directory: Path, init_db_dir: object, *, clustered: bool) -> None:
    """Create the recovery partitions the first time a single process runs
    (``python -m bytewax.recovery DIR 1``). A cluster's partitions are made once, up front."""
    if directory.exists() and any(directory.glob("part-*.sqlite3")):
        return
    if clustered:
        raise ConfigError(
            f"recovery directory {directory} has no partitions. For a cluster, create them once "
            f"with `python -m bytewax.recovery {directory} N` (N = total workers) on storage every "
            "process mounts, then start the processes."
        )
    directory.mkdir(parents=True, exist_ok=True)
    init_db_dir(directory, 1)  # type: ignore[operator]
    log.info("initialised recovery directory %s", directory)


def simulate(settings: Settings, scenario: str, seed: int, rate: float | None, *, load_catalog: bool) -> int:
    """Write a scenario to Kafka (and optionally its catalog to Redis); 1 if Kafka failed."""
    from simulators.kafka_writer import write_scenario
    from simulators.scenario import Scenario

    loaded = Scenario.load(scenario)
    if load_catalog:
        _save_catalog(settings, _scenario_catalog(scenario, seed))
    topics = {
        "wifi.probes": settings.topic_probes,
        "pos.transactions": settings.topic_transactions,
        "members.events": settings.topic_members,
    }
    report = write_scenario(loaded, seed, settings.kafka_client_config(), topics=topics, rate=rate)
    print(report.summary())
    return 1 if report.error else 0


def catalog_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.catalog_command == "export":
        text = _scenario_catalog(args.scenario, args.seed).to_yaml()
        if args.output:
            args.output.write_text(text)
        else:
            sys.stdout.write(text)
        return 0
    if args.file is not None:
        catalog = Catalog.from_yaml(args.file.read_text())
    elif args.scenario:
        catalog = _scenario_catalog(args.scenario, args.seed)
    else:
        raise ConfigError("catalog load needs a FILE.yaml or --scenario NAME")
    version = _save_catalog(settings, catalog)
    print(
        f"catalog {version} loaded: {len(catalog.malls)} malls, {len(catalog.stores)} stores, "
        f"{len(catalog.sensors)} sensors, {len(catalog.campaigns)} campaigns"
    )
    return 0


def _scenario_catalog(scenario: str, seed: int) -> Catalog:
    from simulators.mall import MallSimulator
    from simulators.scenario import Scenario

    return MallSimulator(Scenario.load(scenario), seed).catalog


def _save_catalog(settings: Settings, catalog: Catalog) -> str:
    from state.catalog import CatalogStore
    from state.redis import connect

    if not settings.redis_url:
        raise ConfigError("STOREPULSE_REDIS_URL is not set: the catalog lives in Redis")
    return CatalogStore(connect(settings.redis_url)).save(catalog)
