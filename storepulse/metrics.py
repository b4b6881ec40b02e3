"""Every Prometheus metric the engine exports, declared in one place.

Names follow the Prometheus guide: one ``storepulse_`` prefix, base units as suffixes,
``_total`` for counters, ratios 0-1. Labels come from small fixed sets (topic, reason,
store, mall, zone, scope); never a member id, a device id or a MAC.

>>> sorted(m for m in exported_names() if m.startswith("storepulse_input"))[:2]
['storepulse_input_accepted_total', 'storepulse_input_records_total']
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase

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
EVENT_TIME_LAG = Gauge(
    "storepulse_event_time_lag_seconds",
    "Wall clock minus the site's event clock (how far behind live the engine is).",
    ["mall"],
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
SALES_AMOUNT = Counter("storepulse_sales_amount_fen", "Sales amount in minor currency units.", ["store"])
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
CATALOG_VERSION = Gauge(
    "storepulse_catalog_loaded_timestamp_seconds",
    "When this process last loaded a new catalog version.",
)


def exported_names() -> set[str]:
    """Every sample name the storepulse metrics can expose (for dashboard checks)."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    names: set[str] = set()
    for value in globals().values():
        if isinstance(value, MetricWrapperBase):
            for metric in value.describe():
                names.update(metric.name + s for s in suffixes[metric.type])
    return names


def serve(port: int, addr: str = "127.0.0.1") -> None:
    """Expose /metrics on ``addr:port`` from a daemon thread (port 0: do nothing)."""
    if port:
        start_http_server(port, addr=addr)
