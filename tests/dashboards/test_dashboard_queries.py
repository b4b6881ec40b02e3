"""Every dashboard query is valid PromQL and finds data in a real Prometheus that scrapes a
process exposing the storepulse metrics.

The scraped process is one fixture, ``metrics_target``: today a stand-in that fills every
declared metric (``metrics_target.py``); ``storepulse demo --run-on --metrics-port P`` drops
in by changing its command line and setting ``complete`` to what the demo guarantees.
Template variables are resolved the way Grafana does: each query variable's own query runs
against Prometheus and the first value it finds is selected.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dashboards.promql import substitute, variable_query
from tests.fixtures.prometheus import PrometheusServer, free_port, start_prometheus

DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "dashboards"
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@dataclass(frozen=True)
class MetricsTarget:
    """A process serving /metrics: its ``host:port`` and whether every series has samples."""

    address: str
    complete: bool


def _boards() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))]


def _targets() -> list[Any]:
    params = []
    for board in _boards():
        for panel in board["panels"]:
            for inner in [panel, *panel.get("panels", [])]:
                for target in inner.get("targets", []):
                    params.append(
                        pytest.param(
                            board["uid"],
                            target,
                            id=f"{board['uid']}:{inner['id']}{target['refId']}:{inner['title']}",
                        )
                    )
    return params


@pytest.fixture(scope="module")
def metrics_target() -> Iterator[MetricsTarget]:
    """The one place to swap the scraped process (see the module docstring)."""
    port = free_port()
    command = [sys.executable, str(Path(__file__).with_name("metrics_target.py")), str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_metrics(port, process, deadline_s=30.0)
        yield MetricsTarget(address=f"127.0.0.1:{port}", complete=True)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_for_metrics(port: int, process: subprocess.Popen[bytes], deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise AssertionError(f"metrics target exited with {process.returncode}: {stderr}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as resp:
                if b"storepulse_" in resp.read():
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)  # poll interval while the process starts
    raise AssertionError(f"no storepulse metrics on port {port} after {deadline_s}s")


@pytest.fixture(scope="module")
def prometheus(metrics_target: MetricsTarget) -> Iterator[PrometheusServer]:
    server = start_prometheus((metrics_target.address,))
    try:
        # rate() and increase() need two samples in their range: wait for two scrapes.
        server.wait_for('min(count_over_time(up{job="storepulse"}[1m])) >= 2', deadline_s=20.0)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def variable_values(
    prometheus: PrometheusServer, metrics_target: MetricsTarget
) -> dict[str, dict[str, str]]:
    """Per dashboard uid: a value for every template variable, found as Grafana would."""
    resolved: dict[str, dict[str, str]] = {}
    for board in _boards():
        values = dict(BUILTINS)
        for var in board["templating"]["list"]:
            if var["type"] != "query":
                continue
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            expr, label = variable_query(query)
            assert expr and label, f"{board['uid']} ${var['name']}: use label_values(expr, label)"
            series = prometheus.query(expr)
            found = sorted({s["metric"][label] for s in series if label in s["metric"]})
            if metrics_target.complete:
                assert found, f"{board['uid']} ${var['name']}: {query} found no values"
            values[var["name"]] = found[0] if found else var.get("allValue", ".*")
        resolved[board["uid"]] = values
    return resolved


@pytest.mark.parametrize(("uid", "target"), _targets())
def test_panel_query_runs_and_finds_data(
    uid: str,
    target: dict[str, Any],
    prometheus: PrometheusServer,
    variable_values: dict[str, dict[str, str]],
    metrics_target: MetricsTarget,
) -> None:
    expr = substitute(target["expr"], variable_values[uid])
    result = prometheus.query(expr)  # raises with Prometheus's message on bad PromQL
    if not metrics_target.complete:
        return
    assert result, f"{expr!r} returned no series"
    wanted = set(LEGEND_LABEL.findall(target.get("legendFormat", "")))
    for series in result:
        labels = series.get("metric", {})
        assert wanted <= labels.keys(), f"legend {target['legendFormat']!r} vs labels {labels}"


def test_prometheus_reports_bad_promql(prometheus: PrometheusServer) -> None:
    """The check above can fail: a syntax error comes back as an error, not an empty result."""
    with pytest.raises(AssertionError, match="bad_data"):
        prometheus.query("sum by (le (rate(storepulse_sales_total[1m]))")


def test_prometheus_scraping_fixture(prometheus_scraping: Any, metrics_target: MetricsTarget) -> None:
    """The function-scoped factory other tests use: scrapes within seconds, reports health."""
    server = prometheus_scraping(metrics_target.address)
    [sample] = server.wait_for(
        'storepulse_footfall_devices{scope="mall"}', deadline_s=15.0
    )
    assert sample["metric"]["instance"] == metrics_target.address
    assert sample["metric"]["job"] == "storepulse"
    assert [(url, health) for url, health, _ in server.target_health()] == [
        (f"http://{metrics_target.address}/metrics", "up")
    ]
