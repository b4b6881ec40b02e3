"""Every Prometheus metric the engine exports, declared in one place.

Names follow the Prometheus guide: one ``storepulse_`` prefix, base units as suffixes,
``_total`` for counters, ratios 0-1. Labels come from small fixed sets (topic, reason,
store, mall, zone, scope with its id (a zone, store, mall or sensor), merchant, and an
alert's status, severity and cause); never a member id, a device id or a MAC.

>>> sorted(m for m in exported_names() if m.startswith("storepulse_input"))[:2]
['storepulse_input_accepted_total', 'storepulse_input_records_total']
"""

from __future__ import annotations

import json
import platform
import threading
from collections.abc import Callable, Iterable
from importlib import metadata
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.metrics import MetricWrapperBase

from storepulse import health

INPUT_RECORDS = Counter(
    "storepulse_input_records",
    "Input records read, by topic (a batched probe report counts once per observation).",
    ["topic"],
)
INPUT_ACCEPTED = Counter(
    "storepulse_input_accepted",
    "Input records used (read = accepted + rejected + duplicate transactions).",
    ["topic"],
)
INPUT_REJECTED = Counter(
    "storepulse_input_rejected",
    "Input records sent to the dead-letter topic, by topic and reason.",
    ["topic", "reason"],
)
DUPLICATES = Counter(
    "storepulse_duplicate_transactions",
    "Transactions dropped because their txn_id was already counted (replays, retries).",
    ["store"],
)
KAFKA_PRODUCED = Counter("storepulse_kafka_produced_messages", "Messages whose delivery Kafka confirmed.", ["topic"])
KAFKA_DELIVERY_FAILURES = Counter(
    "storepulse_kafka_delivery_failures",
    "Deliveries Kafka reported as failed (each is retried; see the log).",
    ["topic"],
)
KAFKA_CONSUMER_ERRORS = Counter(
    "storepulse_kafka_consumer_errors",
    "Transient consumer errors survived (broker down, rebalance, timeouts).",
    ["topic"],
)
# ---- Kafka input progress: lag, group offsets, partitions (issue 12) --------------------
KAFKA_CONSUMER_LAG = Gauge(
    "storepulse_kafka_consumer_lag_messages",
    "High watermark (as of the last fetch) minus the next offset to read, per input partition.",
    ["topic", "partition"],
)
KAFKA_COMMIT_FAILURES = Counter(
    "storepulse_kafka_commit_failures",
    "Offset commits to the monitoring consumer group that failed (positions are unaffected).",
    ["topic"],
)
KAFKA_PARTITIONS_UNREAD = Gauge(
    "storepulse_kafka_partitions_unread",
    "Partitions added to an input topic since start, not read until a restart.",
    ["topic"],
)
# ---- end of Kafka input progress ---------------------------------------------------------
EVENT_TIME_LAG = Gauge(
    "storepulse_event_time_lag_seconds",
    "Wall clock minus the site's event clock (how far behind live the engine is).",
    ["mall"],
)
SOURCE_CLOCK_OFFSET = Gauge(
    "storepulse_source_clock_offset_seconds",
    "A sensor's (wifi.probes) or store's tills' (pos.transactions) newest event time in the "
    "last read minus the engine's wall clock: its clock offset at the live edge (positive: "
    "running fast), how far behind the read is while a backlog is read.",
    ["topic", "source"],
)
DEVICES = Gauge(
    "storepulse_footfall_devices",
    "Distinct devices heard in the last closed minute, by scope (zone/store/mall).",
    ["scope", "id"],
)
DEVICES_1H = Gauge(
    "storepulse_footfall_devices_1h",
    "Distinct devices heard in the hour ending with the last closed minute.",
    ["scope", "id"],
)
VISITORS_INSIDE = Gauge(
    "storepulse_footfall_visitors_inside",
    "Devices in a qualified visit during the last closed minute.",
    ["store"],
)
VISITS = Counter("storepulse_footfall_visits", "Completed store visits.", ["store", "mac_kind"])
VISIT_DWELL = Histogram(
    "storepulse_footfall_visit_dwell_seconds",
    "Dwell time of completed visits.",
    ["store"],
    buckets=(300, 1200, 3600, 21600),
)
SALES = Counter("storepulse_sales", "Sales counted (refunds excluded).", ["store"])
SALES_AMOUNT = Counter(
    "storepulse_sales_amount_minor_units",
    "Sales amount in minor units (e.g. fen, cents) of the store's currency, which the catalog states.",
    ["store", "currency"],
)
CAPTURE_RATE = Gauge(
    "storepulse_footfall_capture_ratio",
    "Visitors / passers-by of the store's current event-time hour.",
    ["store"],
)
CONVERSION = Gauge(
    "storepulse_footfall_conversion_ratio",
    "Sales / visitors of the store's current event-time hour.",
    ["store"],
)
PEOPLE = Gauge(
    "storepulse_people",
    "People estimated present in the newest closed 5-minute event-time window, by scope "
    "(sensor/zone/store; a zone or store sums its sensors; 0 when none of them heard anything).",
    ["scope", "id"],
)
PEOPLE_MACS = Gauge(
    "storepulse_people_macs",
    "Distinct MAC addresses at the signal floor in the newest closed 5-minute window, by scope "
    "(the raw count behind storepulse_people).",
    ["scope", "id"],
)
PEOPLE_DEVICES = Gauge(
    "storepulse_people_devices",
    "Distinct devices in the newest closed 5-minute window, randomised MACs of one phone merged "
    "and always-present devices left out, by scope.",
    ["scope", "id"],
)
CATALOG_VERSION = Gauge(
    "storepulse_catalog_loaded_timestamp_seconds",
    "When this process last loaded a new catalog version.",
)

# ---- Operations: Redis writes, catalog checks, snapshots, build (issue 12) ---------------
REDIS_WRITE_FAILURES = Counter(
    "storepulse_redis_write_failures",
    "Batch writes to Redis (footfall, profiles) that failed (each retryable one is retried whole).",
)
REDIS_WRITE_RETRIES = Counter(
    "storepulse_redis_write_retries",
    "Retries of batch writes to Redis (footfall, profiles), after a backoff wait.",
)
REDIS_UP = Gauge(
    "storepulse_redis_up",
    "1 if the last batch write to Redis (footfall, profiles) succeeded, 0 while writes fail.",
)
REDIS_LAST_WRITE = Gauge(
    "storepulse_redis_last_write_timestamp_seconds",
    "When a batch write to Redis (footfall, profiles) last succeeded (age: time() - this).",
)
PROFILE_UPDATES = Counter(
    "storepulse_profile_updates",
    "Member profiles written to Redis (one older than the stored profile is not written, not counted).",
)
MEMBERS_ERASED = Counter(
    "storepulse_members_erased",
    "Member erasures applied to Redis (profile deleted, tombstone left); a replayed or stale "
    "erasure is not counted again.",
)
POINTS_ISSUED = Counter(
    "storepulse_points_issued",
    "Loyalty points earned by members' sales, by merchant (counted when the sale is applied; "
    "a replay after a restart counts again).",
    ["merchant"],
)
POINTS_REDEEMED = Counter(
    "storepulse_points_redeemed",
    "Loyalty points members paid with, by merchant (counted when the sale is applied).",
    ["merchant"],
)
SALE_TO_PROFILE = Histogram(
    "storepulse_sale_to_profile_seconds",
    "From a member's sale or refund entering Kafka (its message timestamp) to the member's "
    "profile written to Redis.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0),
)
STORE_MEMBERS_ACTIVE = Gauge(
    "storepulse_store_members_active",
    "Members with a purchase at the store in the 30 days before its newest member purchase.",
    ["store"],
)
STORE_REPURCHASE_RATE = Gauge(
    "storepulse_store_repurchase_ratio",
    "Share of the store's active members (30 days) with two or more purchases in those 30 days.",
    ["store"],
)
# ---- Sales-drop watch and store health (flows.sales_watch) ------------------------------
STORE_SALES_5M = Gauge(
    "storepulse_store_sales_5m",
    "Net sales (sales - refunds, counted) of the store's newest closed 5-minute bucket.",
    ["store"],
)
STORE_SALES_EXPECTED_5M = Gauge(
    "storepulse_store_sales_expected_5m",
    "Net sales the store's learned normal expected in its newest closed 5-minute bucket (no "
    "series while the store is closed or in its cold start); a Poisson band is expected +- "
    "2*sqrt(expected).",
    ["store"],
)
STORE_DROP_SCORE = Gauge(
    "storepulse_store_drop_score",
    "Sales-drop score 0-1 of the store's newest closed 5-minute bucket (0.5: alert-worthy).",
    ["store"],
)
STORE_ALERT_FIRING = Gauge(
    "storepulse_store_alert_firing",
    "1 while a sales-drop alert of the store is firing, 0 once it resolved or none fired.",
    ["store"],
)
ALERT_NOTICES = Counter(
    "storepulse_alert_notices",
    "Sales-drop alert notices made, by status (firing, resolved), severity and cause (a "
    "replay after a restart counts again).",
    ["status", "severity", "cause"],
)
ALERT_DELIVERIES = Counter(
    "storepulse_alert_deliveries",
    "Alert notices handled by the outbox, by channel (kafka, webhook) and outcome (sent; "
    "skipped: marked as delivered before, a replay; dead_lettered: the webhook gave up).",
    ["channel", "outcome"],
)
STORE_HEALTH_SCORE = Gauge(
    "storepulse_store_health_score",
    "The store's health score 0-100 (sales and footfall against normal, conversion, "
    "repurchase) as last written to Redis.",
    ["store"],
)
# ---- end of the sales-drop block --------------------------------------------------------
WEBHOOK_DELIVERIES = Counter(
    "storepulse_webhook_deliveries",
    "Webhook messages finished, by receiver and reason (delivered, or why it was given up "
    "and dead-lettered: rejected, tls, http_429, http_5xx, timeout, connection).",
    ["receiver", "reason"],
)
WEBHOOK_ATTEMPT_FAILURES = Counter(
    "storepulse_webhook_attempt_failures",
    "Failed webhook POST attempts (each retried or given up), by receiver and reason.",
    ["receiver", "reason"],
)
CATALOG_CHECK_FAILURES = Counter(
    "storepulse_catalog_check_failures",
    "Catalog version checks that failed, by reason (unreachable: Redis did not answer; "
    "invalid: the catalog in Redis did not validate).",
    ["reason"],
)
LAST_SNAPSHOT = Gauge(
    "storepulse_last_snapshot_timestamp_seconds",
    "When the footfall state was last snapshotted (age: time() - this).",
)
BUILD_INFO = Gauge(
    "storepulse_build_info",
    "Always 1; the labels say which storepulse, bytewax and Python this process runs.",
    ["version", "bytewax", "python"],
)


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


BUILD_INFO.labels(_version("storepulse"), _version("bytewax"), platform.python_version()).set(1)


def snapshot_taken(now: float) -> None:
    """Record a snapshot of the footfall state at ``now`` (epoch seconds, e.g. time.time()).
    Its age in PromQL is ``time() - storepulse_last_snapshot_timestamp_seconds``."""
    LAST_SNAPSHOT.set(now)
# ---- end of the operations block ----------------------------------------------------------


def exported_names() -> set[str]:
    """Every sample name the storepulse metrics can expose (for dashboard checks)."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    names: set[str] = set()
    for value in globals().values():
        if isinstance(value, MetricWrapperBase):
            for metric in value.describe():
                names.update(metric.name + s for s in suffixes[metric.type])
    return names


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass  # a scrape every few seconds is not news


def health_app(
    registry: CollectorRegistry = REGISTRY, readiness: health.Readiness = health.READINESS
) -> Callable[..., Iterable[bytes]]:
    """The WSGI app of the metrics port: ``/metrics`` (prometheus_client's exposition,
    OpenMetrics and gzip by Accept headers), ``/healthz`` (200 while the process answers)
    and ``/readyz`` (200 when ``readiness`` is ready, else 503; JSON of every condition)."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        body: dict[str, object]
        if path in ("/metrics", "/"):
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            status, body = "200 OK", {"live": True}
        elif path == "/readyz":
            report = readiness.report()
            status = "200 OK" if report.ready else "503 Service Unavailable"
            body = report.to_json()
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: try /metrics, /healthz or /readyz\n"]
        payload = json.dumps(body, sort_keys=True).encode() + b"\n"
        start_response(status, [("Content-Type", "application/json"), ("Cache-Control", "no-store")])
        return [payload]

    return app


class MetricsServer:
    """The metrics port of this process, serving ``health_app`` from a daemon thread.
    ``port`` 0 binds a free port (see ``.port``); ``close()`` stops it."""

    def __init__(
        self,
        port: int,
        addr: str = "127.0.0.1",
        *,
        registry: CollectorRegistry = REGISTRY,
        readiness: health.Readiness = health.READINESS,
    ) -> None:
        self._server = make_server(
            addr, port, health_app(registry, readiness), server_class=_Server, handler_class=_QuietHandler
        )
        self.port: int = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="storepulse-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve(port: int, addr: str = "127.0.0.1") -> MetricsServer | None:
    """Serve /metrics, /healthz and /readyz on ``addr:port`` from a daemon thread
    (port 0: do nothing). Raises OSError if the port is taken."""
    return MetricsServer(port, addr) if port else None
