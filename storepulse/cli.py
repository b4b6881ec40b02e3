"""The ``storepulse`` command line: the one place that wires simulators into flows.

storepulse demo                      the whole engine on embedded defaults
storepulse run                       against Kafka and Redis (a bytewax cluster member)
storepulse simulate                  write a scenario to Kafka at a set rate
storepulse catalog load FILE.yaml    load malls, stores, sensors, campaigns into Redis
storepulse catalog export            write a scenario's catalog as YAML
storepulse eval footfall|profiles    engine footfall or member profiles vs the simulator's truth
storepulse eval alerts               the sales-drop detector vs labelled incidents
storepulse eval occupancy --data DIR people estimated by the engine vs people counted (lab data)
storepulse profile show MEMBER_ID    a member's profile as stored in Redis
storepulse bench profile-latency     sale to profile in Redis, measured against a running engine
storepulse dashboards push           push the Grafana dashboards
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from storepulse.errors import ConfigError, StorepulseError
from storepulse.settings import Settings, describe_variables

log = logging.getLogger("storepulse")

EPILOG = "Environment variables (flags win over them):\n" + describe_variables()


def _number(kind: type[int] | type[float], *, minimum: float, inclusive: bool = True) -> Callable[[str], float]:
    """An argparse ``type`` that refuses numbers below ``minimum`` (or equal, if not ``inclusive``)."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            raise argparse.ArgumentTypeError(f"{text} is not {'>=' if inclusive else '>'} {minimum:g}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _scenario_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--scenario", default=default, help=f"bundled scenario name or YAML path (default: {default})")
    p.add_argument("--seed", type=int, default=7, help="random seed of the simulation (default: 7)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="storepulse",
        description="Real-time footfall and retail analytics on bytewax, Kafka and Redis.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run the engine on a simulated mall day, embedded Redis, no servers needed",
        description="Simulate a mall day, run the whole engine in-process on an embedded Redis, "
        "serve metrics, show a live view, write JSONL files of the outputs and end with a summary.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _scenario_args(demo, "demo")
    demo.add_argument(
        "--speedup",
        type=_number(float, minimum=0),
        default=4000.0,
        help="simulated seconds per wall second; 0 = as fast as possible (default: 4000)",
    )
    demo.add_argument("--out", type=Path, help="output directory (default: STOREPULSE_OUTPUT_DIR or storepulse-out)")
    demo.add_argument("--metrics-port", type=int, help="Prometheus port (default: STOREPULSE_METRICS_PORT or 9464)")
    demo.add_argument(
        "--run-on", action="store_true", help="after the summary, keep serving metrics and Redis until Ctrl-C"
    )
    demo.add_argument("--quiet", action="store_true", help="no live view, only the summary")

    run = sub.add_parser(
        "run",
        help="run the engine against Kafka and Redis",
        description="Run the engine as one process of a bytewax cluster, reading Kafka and serving "
        "footfall from Redis. Metrics are served on STOREPULSE_METRICS_PORT + process id (0: off). "
        "Checks the settings and that Redis answers before it starts.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "-w", "--workers", type=_number(int, minimum=1), default=1, help="worker threads in this process (default: 1)"
    )
    run.add_argument("-i", "--process-id", type=_number(int, minimum=0), help="this process's index in the cluster")
    run.add_argument("-a", "--addresses", help='host:port of every process, ";"-separated, same order on all')
    run.add_argument("--recovery-dir", type=Path, help="bytewax recovery directory (default: STOREPULSE_RECOVERY_DIR)")
    run.add_argument(
        "--snapshot-s",
        type=_number(float, minimum=0, inclusive=False),
        default=10.0,
        help="seconds between snapshots (default: 10)",
    )
    run.add_argument(
        "--create-topics",
        type=_number(int, minimum=1),
        metavar="PARTITIONS",
        help="create missing input/output topics with this many partitions first",
    )

    sim = sub.add_parser(
        "simulate",
        help="write a scenario to Kafka",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _scenario_args(sim, "demo")
    sim.add_argument(
        "--rate",
        type=_number(float, minimum=0, inclusive=False),
        help="messages per second (default: as fast as possible)",
    )
    sim.add_argument("--load-catalog", action="store_true", help="also load the scenario's catalog into Redis")

    cat = sub.add_parser("catalog", help="manage the catalog in Redis")
    cat_sub = cat.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    load = cat_sub.add_parser("load", help="load a catalog YAML file (or a scenario's catalog) into Redis")
    load.add_argument("file", nargs="?", type=Path, help="catalog YAML file")
    load.add_argument("--scenario", help="load this scenario's simulated catalog instead of a file")
    load.add_argument("--seed", type=int, default=7)
    export = cat_sub.add_parser("export", help="write a scenario's catalog as YAML")
    _scenario_args(export, "demo")
    export.add_argument("-o", "--output", type=Path, help="file to write (default: standard output)")

    ev = sub.add_parser("eval", help="compare the engine's results with the simulator's truth or labelled data")
    ev.add_argument("what", choices=["footfall", "profiles", "alerts", "occupancy"])
    ev.add_argument(
        "--scenario",
        help="bundled scenario name or YAML path (default: eval-footfall for footfall, members-month for "
        "profiles; alerts has its own labelled scenario, simulators/sales_drops.py)",
    )
    ev.add_argument("--seed", type=int, default=7, help="random seed of the simulation (default: 7)")
    ev.add_argument("--json", action="store_true", help="print only the JSON result")
    ev.add_argument(
        "--data",
        type=Path,
        help="occupancy: a lab-probes folder (sightings.jsonl.gz, occupancy.csv) to replay through the "
        "engine and score; alone, validated by leaving whole days out",
    )
    ev.add_argument("--train", type=Path, help="occupancy: a lab-probes folder to fit the calibrations on")
    ev.add_argument("--plot", type=Path, help="occupancy: write an SVG of estimated against counted people here")
    ev.add_argument(
        "--folds", type=_number(int, minimum=2), default=5, help="occupancy without --train: folds of days (5)"
    )

    prof = sub.add_parser("profile", help="member profiles in Redis")
    prof_sub = prof.add_subparsers(dest="profile_command", required=True, metavar="ACTION")
    show = prof_sub.add_parser(
        "show",
        help="print a member's profile from Redis (STOREPULSE_REDIS_URL); exit 1 if there is none",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("member_id", metavar="MEMBER_ID", help="the member's id (member_id of pos.transactions)")
    show.add_argument("--json", action="store_true", help="print the profile as one JSON object")

    from storepulse import bench as _bench  # stdlib-only at import: the defaults below

    bench = sub.add_parser("bench", help="measure a running engine from outside")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    latency = bench_sub.add_parser(
        "profile-latency",
        help="from a member's sale produced to Kafka to that member's profile in Redis",
        description="Against a running `storepulse run` (same Kafka topic, same Redis, catalog loaded): "
        "produce member sales at --rate, learn from Redis keyspace notifications when each "
        "member's profile lands, and print sent, observed, missing, p50_s, p99_s, max_s, rate and "
        "seconds as one JSON line, the last. Exit 1 if a sale never reached Redis.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    latency.add_argument(
        "--sales",
        type=_number(int, minimum=1),
        default=_bench.DEFAULT_SALES,
        help=f"measured sales, each by a new member (default: {_bench.DEFAULT_SALES})",
    )
    latency.add_argument(
        "--rate",
        type=_number(float, minimum=0, inclusive=False),
        default=_bench.DEMO_MEMBER_SALE_RATE,
        help=f"sales per second (default: {_bench.DEMO_MEMBER_SALE_RATE:g}, the demo's member-sale rate)",
    )
    latency.add_argument(
        "--warmup",
        type=_number(int, minimum=0),
        default=_bench.DEFAULT_WARMUP,
        help=f"sales sent and awaited first, not measured (default: {_bench.DEFAULT_WARMUP})",
    )
    latency.add_argument(
        "--timeout",
        type=_number(float, minimum=0, inclusive=False),
        default=_bench.DEFAULT_TIMEOUT_S,
        help=f"seconds to wait for stragglers after the last sale; the rest are reported missing "
        f"(default: {_bench.DEFAULT_TIMEOUT_S:g}; the warm-up waits at least 60)",
    )

    dash = sub.add_parser("dashboards", help="Grafana dashboards")
    dash_sub = dash.add_subparsers(dest="dashboards_command", required=True, metavar="ACTION")
    push = dash_sub.add_parser("push", help="push every dashboard (STOREPULSE_GRAFANA_URL, STOREPULSE_GRAFANA_TOKEN)")
    push.add_argument("--folder", default="storepulse")
    return top


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C: finally blocks and atexit run


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return _dispatch(args)
    except StorepulseError as exc:
        print(f"storepulse: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from storepulse.demo import run_demo

        settings = Settings.from_env(output_dir=args.out, metrics_port=args.metrics_port)
        return run_demo(
            settings,
            scenario=args.scenario,
            seed=args.seed,
            speedup=args.speedup or None,
            run_on=args.run_on,
            live=not args.quiet,
        )
    if args.command == "run":
        from storepulse.run import run_engine

        settings = Settings.from_env(recovery_dir=args.recovery_dir)
        return run_engine(
            settings,
            workers=args.workers,
            process_id=args.process_id,
            addresses=args.addresses,
            snapshot_s=args.snapshot_s,
            create_topics=args.create_topics,
        )
    if args.command == "simulate":
        from storepulse.run import simulate

        return simulate(Settings.from_env(), args.scenario, args.seed, args.rate, load_catalog=args.load_catalog)
    if args.command == "catalog":
        from storepulse.run import catalog_command

        return catalog_command(Settings.from_env(), args)
    if args.command == "eval":
        from storepulse.evaluate import evaluate_footfall, evaluate_profiles

        if args.what == "profiles":
            return evaluate_profiles(args.scenario or "members-month", args.seed, as_json=args.json)
        if args.what == "alerts":
            from storepulse.eval_alerts import evaluate_alerts

            return evaluate_alerts(args.seed, as_json=args.json)
        if args.what == "occupancy":
            from storepulse.eval_occupancy import evaluate_occupancy

            if args.data is None:
                raise ConfigError("eval occupancy needs --data DIR (a lab-probes folder)")
            return evaluate_occupancy(args.train, args.data, folds=int(args.folds), as_json=args.json, plot=args.plot)
        return evaluate_footfall(args.scenario or "eval-footfall", args.seed, as_json=args.json)
    if args.command == "profile":
        from storepulse.run import show_profile

        return show_profile(Settings.from_env(), args.member_id, as_json=args.json)
    if args.command == "bench":
        from storepulse.bench import profile_latency_command

        return profile_latency_command(
            Settings.from_env(), sales=args.sales, rate=args.rate, warmup=args.warmup, timeout_s=args.timeout
        )
    if args.command == "dashboards":
        from dashboards.push import push_dashboards

        settings = Settings.from_env()
        if not settings.grafana_url:
            raise ConfigError("STOREPULSE_GRAFANA_URL is not set: give Grafana's base URL")
        for uid in push_dashboards(settings.grafana_url, settings.grafana_token or "", folder=args.folder):
            print(f"pushed {uid}")
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
