"""``storepulse run``, ``simulate``, ``catalog`` and ``profile``: the commands that talk to real servers."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import timedelta
from pathlib import Path

from connectors.catalog import Catalog
from storepulse import metrics
from storepulse.errors import CatalogError, ConfigError
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
    """Run this process of the engine's bytewax cluster until it is stopped.

    Checks first, before touching Kafka or building the dataflow: the flags, the metrics
    port, the MAC hash key, and that Redis answers a PING (``check_redis``).
    """
    from bytewax.recovery import RecoveryConfig
    from bytewax.run import cli_main

    from flows.engine import build_flow

    if (process_id is None) != (addresses is None):
        raise ConfigError("-i/--process-id and -a/--addresses go together (one address per process)")
    if addresses is not None and process_id is not None and process_id >= len(addresses.split(";")):
        raise ConfigError(
            f"-i/--process-id {process_id} has no address in -a/--addresses ({len(addresses.split(';'))} "
            "given, process ids count from 0)"
        )
    port = settings.metrics_port_of(process_id or 0)
    settings.require_mac_hash_key()
    check_redis(settings, "run")
    if create_topics:
        from connectors.kafka import ensure_topics

        names = (settings.topic_probes, settings.topic_transactions, settings.topic_members,
                 settings.topic_deadletter, settings.topic_alerts)  # fmt: skip
        ensure_topics(settings.kafka_client_config(), {name: create_topics for name in names})
    flow = build_flow(settings)
    _serve_metrics(port, settings.metrics_addr)
    recovery = None
    if settings.recovery_dir is not None:
        _init_recovery(settings.recovery_dir, clustered=process_id is not None)
        recovery = RecoveryConfig(str(settings.recovery_dir))
    log.info(
        "engine starting: process %s, %d worker(s), metrics %s, recovery %s",
        process_id or 0,
        workers,
        f"on :{port}" if port else "off",
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


def check_redis(settings: Settings, command: str) -> None:
    """PING the Redis of ``STOREPULSE_REDIS_URL``.

    ``ConfigError`` if it is unset or malformed, ``BackendUnavailable`` (naming the variable,
    password masked) if it does not answer within the connect timeout.
    """
    from state.redis import connect

    connect(settings.require_redis_url(command)).close()


def _serve_metrics(port: int, addr: str) -> metrics.MetricsServer | None:
    """Start the metrics (and health) server, or nothing for port 0; a taken port is a ConfigError."""
    try:
        return metrics.serve(port, addr=addr)
    except OSError as exc:
        raise ConfigError(
            f"STOREPULSE_METRICS_PORT: cannot serve metrics on {addr}:{port} ({exc.strerror or exc}); "
            "choose a free port (process N of a cluster uses the port + N), or 0 for no metrics"
        ) from None


def _init_recovery(directory: Path, *, clustered: bool) -> None:
    """Create the recovery partitions the first time a single process runs
    (``python -m bytewax.recovery DIR 1``). A cluster's partitions are made once, up front."""
    from bytewax.recovery import init_db_dir

    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"STOREPULSE_RECOVERY_DIR (or --recovery-dir): {directory} is not a directory")
    if directory.exists() and any(directory.glob("part-*.sqlite3")):
        return
    if clustered:
        raise ConfigError(
            f"recovery directory {directory} has no partitions. For a cluster, create them once "
            f"with `python -m bytewax.recovery {directory} N` (N = total workers) on storage every "
            "process mounts, then start the processes."
        )
    directory.mkdir(parents=True, exist_ok=True)
    init_db_dir(directory, 1)
    log.info("initialised recovery directory %s", directory)


def simulate(settings: Settings, scenario: str, seed: int, rate: float | None, *, load_catalog: bool) -> int:
    """Write a scenario to Kafka (and optionally its catalog to Redis); 1 if Kafka failed."""
    from simulators.kafka_writer import write_scenario
    from simulators.scenario import Scenario

    loaded = Scenario.load(scenario)
    if load_catalog:
        _save_catalog(settings, _scenario_catalog(scenario, seed), "simulate --load-catalog")
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
        catalog = Catalog.from_yaml(_read_catalog_file(args.file))
    elif args.scenario:
        catalog = _scenario_catalog(args.scenario, args.seed)
    else:
        raise ConfigError("catalog load needs a FILE.yaml or --scenario NAME")
    version = _save_catalog(settings, catalog, "catalog load")
    print(
        f"catalog {version} loaded: {len(catalog.malls)} malls, {len(catalog.stores)} stores, "
        f"{len(catalog.sensors)} sensors, {len(catalog.campaigns)} campaigns"
    )
    return 0


def _read_catalog_file(path: Path) -> str:
    """The text of a catalog file, or a ``CatalogError`` that says why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(
            f"catalog file {path} does not exist. Give the path of a catalog YAML file; "
            "`storepulse catalog export --scenario demo -o catalog.yaml` writes one to start from."
        ) from None
    except UnicodeDecodeError as exc:
        raise CatalogError(f"catalog file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:  # a directory, no permission, an I/O error
        raise CatalogError(f"cannot read catalog file {path}: {exc.strerror or exc}") from None


def _scenario_catalog(scenario: str, seed: int) -> Catalog:
    from simulators.mall import MallSimulator
    from simulators.scenario import Scenario

    return MallSimulator(Scenario.load(scenario), seed).catalog


def _save_catalog(settings: Settings, catalog: Catalog, command: str) -> str:
    from state.catalog import CatalogStore
    from state.redis import connect
    from state.store_health import prune

    client = connect(settings.require_redis_url(command))
    version = CatalogStore(client).save(catalog)
    for store_id in prune(client, {s.store_id for s in catalog.stores}):
        log.info("store %s left the catalog: its health is out of the ranking", store_id)
    return version


def show_profile(settings: Settings, member_id: str, *, as_json: bool) -> int:
    """``storepulse profile show``: print a member's profile from Redis as aligned
    "field value" lines, or with ``as_json`` one JSON object (fields in schema order),
    followed by the member's visits (``sp:member:{id}:visits``; ``visits`` null in JSON
    when no visit of a bound device was seen). A member without a profile prints why on
    standard error and returns 1.
    """
    import msgspec
    import redis
    from redis.exceptions import RedisClusterException

    from state.member_visits import MemberVisitsStore
    from state.profiles import ProfileStore, profile_key
    from state.redis import connect, mask_url
    from storepulse.errors import BackendUnavailable, StorepulseError

    url = settings.require_redis_url("profile show")
    client = connect(url)
    try:
        profile = ProfileStore(client).read(member_id)
        visits = MemberVisitsStore(client).read(member_id) if profile is not None else None
    except (redis.RedisError, RedisClusterException, OSError) as exc:
        raise BackendUnavailable(
            f"reading {profile_key(member_id)} from Redis at {mask_url(url)} failed ({type(exc).__name__}: {exc})"
        ) from None
    except msgspec.ValidationError as exc:
        raise StorepulseError(
            f"{profile_key(member_id)} in Redis at {mask_url(url)} is not a member profile ({exc}); "
            "the engine rewrites it with the member's next transaction"
        ) from None
    finally:
        client.close()
    if profile is None:
        print(
            f"no profile for member {member_id!r} in Redis at {mask_url(url)} ({profile_key(member_id)} "
            "does not exist): the engine has applied no transaction of this member yet, or the member "
            "was erased",
            file=sys.stderr,
        )
        return 1
    fields = msgspec.structs.asdict(profile)
    if as_json:
        fields["visits"] = visits
        print(msgspec.json.format(msgspec.json.encode(fields), indent=2).decode())
        return 0
    fields["loyalty"] = tuple(
        f"{a.merchant_id}: {a.level}, {a.points} points (earned {a.earned}, redeemed {a.redeemed}, "
        f"taken back {a.taken_back}, returned {a.returned}, expired {a.expired}; "
        f"qualifying spend {a.qualifying_spend})"
        for a in profile.loyalty
    )
    if visits is not None:
        fields |= {
            "stores_visited": visits.stores_visited,
            "last_seen_ts": visits.last_seen_ts,
            "last_seen_store": visits.last_seen_store,
        }
    print(format_profile(fields))
    return 0


def format_profile(fields: dict[str, object]) -> str:
    """Aligned "field value" lines: None as ``-``, sequences comma-separated.

    >>> print(format_profile({"member_id": "M1", "avg_ticket": None, "stores": ("S1", "S2"), "rfm": "543"}))
    member_id   M1
    avg_ticket  -
    stores      S1, S2
    rfm         543
    """
    width = max(map(len, fields), default=0)

    def show(value: object) -> str:
        if value is None:
            return "-"
        if isinstance(value, tuple | list):
            return ", ".join(map(str, value)) if value else "(none)"
        return repr(value) if isinstance(value, float) else str(value)

    return "\n".join(f"{name:<{width}}  {show(value)}" for name, value in fields.items())
