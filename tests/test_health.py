"""storepulse.health (readiness, pure) and the metrics port's /metrics, /healthz, /readyz."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from storepulse import health, metrics
from storepulse.health import Readiness


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_nothing_known_is_not_ready_and_every_known_condition_must_be_up():
    clock = Clock()
    r = Readiness(clock=clock)
    assert not r.report().ready
    r.declare("dataflow")
    assert r.report().failing() == {"dataflow": "not started (for 0.0 s)"}
    r.up("dataflow")
    r.up("redis[0]")
    assert r.report().ready
    clock.now = 103.0
    r.down("redis[0]", "ConnectionError: refused")
    r.up("redis[1]")  # another worker's success does not hide worker 0's failure
    clock.now = 110.5
    report = r.report()
    assert not report.ready
    assert report.failing() == {"redis[0]": "ConnectionError: refused (for 7.5 s)"}
    assert report.to_json()["conditions"]["redis[0]"] == {"ok": False, "reason": "ConnectionError: refused",
                                                          "for_s": 7.5}
    r.up("redis[0]")
    assert r.report().ready


def test_since_moves_only_when_a_condition_flips():
    clock = Clock()
    r = Readiness(clock=clock)
    r.down("kafka[0]", "broker down")
    clock.now = 105.0
    r.down("kafka[0]", "still down, other words")  # a new reason, the same outage
    assert r.report().conditions[0].since == 100.0
    r.up("kafka[0]")
    clock.now = 106.0
    r.up("kafka[0]", "ok")
    assert r.report().conditions[0].since == 105.0


def test_declare_does_not_override_a_report_and_forget_removes():
    r = Readiness(clock=Clock())
    r.up("dataflow")
    r.declare("dataflow")
    assert r.is_up("dataflow")
    r.forget("dataflow")
    assert not r.is_up("dataflow") and r.report().conditions == ()


def test_the_process_registry_waits_for_the_dataflow_and_the_kafka_hooks_report_per_worker():
    r = Readiness(clock=Clock())
    health.kafka_failed("broker 127.0.0.1:9092 unreachable", 1, readiness=r)
    health.kafka_ok(0, readiness=r)
    assert r.report().failing() == {"kafka[1]": "broker 127.0.0.1:9092 unreachable (for 0.0 s)"}
    health.kafka_ok(1, readiness=r)
    health.dataflow_running(r)
    assert r.report().ready
    assert "dataflow" in {c.name for c in health.READINESS.report().conditions}


def test_readiness_is_safe_from_many_threads():
    r = Readiness()
    errors: list[BaseException] = []

    def flip(i: int) -> None:
        try:
            for n in range(2000):
                (r.up if n % 2 else r.down)(f"c{i % 4}", "x")
                r.report()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=flip, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(r.report().conditions) == 4


# ---- the HTTP server --------------------------------------------------------------------


@pytest.fixture
def served() -> Iterator[tuple[metrics.MetricsServer, Readiness, Counter]]:
    registry = CollectorRegistry()
    counter = Counter("storepulse_test_things", "Things.", registry=registry)
    readiness = Readiness()
    readiness.declare("dataflow")
    server = metrics.MetricsServer(0, "127.0.0.1", registry=registry, readiness=readiness)
    try:
        yield server, readiness, counter
    finally:
        server.close()


def get(server: metrics.MetricsServer, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def test_metrics_healthz_and_readyz_on_one_port(served):
    server, readiness, counter = served
    counter.inc(3)
    status, ctype, body = get(server, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    assert "storepulse_test_things_total 3.0" in body
    status, ctype, body = get(server, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert ctype.startswith("application/openmetrics-text") and body.endswith("# EOF\n")

    assert get(server, "/healthz")[:2] == (200, "application/json")  # live before ready

    status, ctype, body = get(server, "/readyz")
    assert (status, ctype) == (503, "application/json")
    answer = json.loads(body)
    assert answer["ready"] is False and answer["conditions"]["dataflow"]["reason"] == "not started"

    readiness.up("dataflow", "running")
    readiness.down("redis[0]", "ConnectionError: Connection refused")
    status, _, body = get(server, "/readyz")
    assert status == 503 and "Connection refused" in body

    readiness.up("redis[0]")
    status, _, body = get(server, "/readyz")
    assert status == 200 and json.loads(body)["ready"] is True

    assert get(server, "/nope")[0] == 404


def test_serve_port_0_is_off_and_a_busy_port_raises(served):
    assert metrics.serve(0) is None
    server, _, _ = served
    with pytest.raises(OSError):
        metrics.serve(server.port)


def test_the_operations_metrics_are_exported():
    names = metrics.exported_names()
    assert {
        "storepulse_redis_write_failures_total", "storepulse_redis_write_retries_total", "storepulse_redis_up",
        "storepulse_redis_last_write_timestamp_seconds", "storepulse_catalog_check_failures_total",
        "storepulse_last_snapshot_timestamp_seconds", "storepulse_build_info",
    } <= names
    metrics.snapshot_taken(1_763_870_400.5)
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("storepulse_last_snapshot_timestamp_seconds") == 1_763_870_400.5
    import platform
    from importlib.metadata import version

    assert REGISTRY.get_sample_value(
        "storepulse_build_info",
        {"version": version("storepulse"), "bytewax": "0.21.1", "python": platform.python_version()},
    ) == 1.0
