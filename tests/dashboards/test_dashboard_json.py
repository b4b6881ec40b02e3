"""The dashboard JSON, checked offline: Grafana's rules we can check without Grafana, and
that every metric a panel or variable queries is one storepulse exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.promql import metric_names, variable_query, variables_used
from dashboards.push import load_dashboards
from storepulse.metrics import exported_names

DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "dashboards"
FILES = sorted(DASHBOARD_DIR.glob("*.json"))
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
# Variables Grafana defines itself (https://grafana.com/docs/grafana/latest/dashboards/variables/).
BUILTIN_VARIABLES = {
    "__rate_interval",
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__from",
    "__to",
    "__dashboard",
    "__org",
    "__user",
    "__name",
}


def dashboard(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def query_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that queries, including those inside collapsed rows."""
    for panel in board.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def exprs(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in query_panels(board):
        for target in panel.get("targets", []):
            where = f"panel {panel.get('title')!r} target {target.get('refId')}"
            yield where, target.get("expr", "")
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            expr, _label = variable_query(query)
            if expr:
                yield f"variable ${var['name']}", expr


def test_the_two_dashboards_exist_and_load() -> None:
    assert {p.name for p in FILES} >= {"storepulse-footfall.json", "storepulse-engine.json"}
    assert [d["uid"] for d in load_dashboards()] == [dashboard(p)["uid"] for p in FILES]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_dashboard_identity(path: Path) -> None:
    board = dashboard(path)
    assert "id" not in board, "a dashboard id is per Grafana instance; use the uid"
    assert board["uid"] == path.stem, "the uid is the file name, so it never drifts"
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", board["uid"])
    assert board["title"].strip()
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert "storepulse" in board["tags"]


def test_uids_and_titles_are_unique() -> None:
    boards = [dashboard(p) for p in FILES]
    assert len({b["uid"] for b in boards}) == len(boards)
    assert len({b["title"] for b in boards}) == len(boards)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_datasource_is_chosen_by_template_variable(path: Path) -> None:
    board = dashboard(path)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    ds = variables["datasource"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == DATASOURCE_REF, var["name"]
    panels = list(query_panels(board))
    assert len(panels) >= 10
    for panel in panels:
        assert panel["datasource"] == DATASOURCE_REF, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"{panel['title']} {target['refId']}: no expr"
            assert target.get("datasource", DATASOURCE_REF) == DATASOURCE_REF


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_panel_ids_and_layout(path: Path) -> None:
    board = dashboard(path)
    ids = [p["id"] for p in board["panels"]] + [p["id"] for row in board["panels"] for p in row.get("panels", [])]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids)
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & mine, f"{panel['title']!r} overlaps another panel"
        cells |= mine


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_variable_used_is_defined(path: Path) -> None:
    board = dashboard(path)
    defined = {v["name"] for v in board["templating"]["list"]} | BUILTIN_VARIABLES
    for where, expr in exprs(board):
        assert variables_used(expr) <= defined, where


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_queried_metric_is_exported(path: Path) -> None:
    exported = exported_names()
    used: set[str] = set()
    for where, expr in exprs(dashboard(path)):
        names = metric_names(expr)
        assert names, f"{where}: {expr!r} selects no metric"
        assert names <= exported, f"{where}: not exported by storepulse: {names - exported}"
        used |= names
    assert all(name.startswith("storepulse_") for name in used)


def test_provisioning_files() -> None:
    providers = yaml.safe_load((DASHBOARD_DIR / "provisioning" / "dashboards.yaml").read_text())
    assert providers["apiVersion"] == 1
    [provider] = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    sources = yaml.safe_load((DASHBOARD_DIR / "provisioning" / "datasources.yaml").read_text())
    [source] = sources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True and source["uid"]
