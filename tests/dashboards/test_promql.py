"""dashboards.promql: metric names out of PromQL, Grafana variable substitution.

Every expected set below is read off the expression by hand.
"""

from __future__ import annotations

import pytest

from dashboards.promql import (
    PromQLSyntaxError,
    metric_names,
    substitute,
    variable_query,
    variables_used,
)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("up", {"up"}),
        ("storepulse_sales_total", {"storepulse_sales_total"}),
        ('a{job="x", instance=~"y.*"}', {"a"}),
        ("rate(a_total[5m])", {"a_total"}),
        ("sum by (le, store) (rate(h_bucket[$__rate_interval]))", {"h_bucket"}),
        ("sum(rate(h_bucket[1m])) by (le)", {"h_bucket"}),
        ("sum without (instance) (a) / ignoring (x) b", {"a", "b"}),
        ("a * on (store) group_left (mall) info", {"a", "info"}),
        ("a * on (store) group_left info", {"a", "info"}),
        ("a > bool 0.5 and b or c unless d", {"a", "b", "c", "d"}),
        ('histogram_quantile(0.9, sum by (le) (rate(x_bucket{s=~"$store"}[5m])))', {"x_bucket"}),
        ("time() - max(ts_seconds)", {"ts_seconds"}),
        ("a offset 1h30m", {"a"}),
        ("a @ start()", {"a"}),
        ("max_over_time(a[10m:1m])", {"a"}),
        ("max_over_time(rate(b[1m])[10m:])", {"b"}),
        ('{__name__="via_name", job="j"}', {"via_name"}),
        ('label_replace(a, "dst", "$1", "src", "(.*)")', {"a"}),
        ('count_values("v", a)', {"a"}),
        ("topk(5, a) + Inf - NaN", {"a"}),
        ("job:request_rate:5m", {"job:request_rate:5m"}),
        ('a{label="sum(b)"} + c{x="{y}"}', {"a", "c"}),
        ("1 + 2 * 3e2 - 0x1f", set()),
        ("vector(1)", set()),
        ("a # a comment naming b\n+ c", {"a", "c"}),
    ],
)
def test_metric_names(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


@pytest.mark.parametrize("expr", ["rate(a[5m]", 'a{b="c"', "sum(a))", "a]", "a ? b"])
def test_metric_names_rejects_broken_expressions(expr: str) -> None:
    with pytest.raises(PromQLSyntaxError):
        metric_names(expr)


def test_substitute_all_variable_forms() -> None:
    values = {"store": "S1|S2", "mall": "M1", "__rate_interval": "1m", "__range": "1h"}
    expr = 'x{store=~"$store", mall=~"${mall}", m2="${mall:regex}", l="[[mall]]"}[$__rate_interval]'
    assert substitute(expr, values) == 'x{store=~"S1|S2", mall=~"M1", m2="M1", l="M1"}[1m]'
    assert substitute("increase(y[$__range])", values) == "increase(y[1h])"


def test_substitute_refuses_unknown_variable() -> None:
    with pytest.raises(KeyError, match=r"\$zone"):
        substitute('x{zone=~"$zone"}', {"store": "S1"})


def test_variables_used() -> None:
    assert variables_used('a{s=~"$store"}[$__rate_interval] / ${mall}') == {
        "store",
        "__rate_interval",
        "mall",
    }
    assert variables_used('label_replace(a, "d", "$1", "s", "(.*)")') == set()


def test_variable_query() -> None:
    assert variable_query('label_values(a{scope="mall", x="1,2"}, id)') == (
        'a{scope="mall", x="1,2"}',
        "id",
    )
    assert variable_query(" label_values( store ) ") == (None, "store")
    assert variable_query("query_result(topk(3, a))") == ("topk(3, a)", None)
    with pytest.raises(ValueError, match="label_values"):
        variable_query("metrics(storepulse_.*)")
