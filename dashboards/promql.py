"""Just enough PromQL and Grafana templating to check dashboards offline.

``metric_names`` lists the metric names a PromQL expression selects: identifiers that
stand alone or open a ``{...}`` selector, plus ``{__name__="..."}`` matchers; never
function or aggregation names, keywords, label names (in selectors and in ``by``/
``without``/``on``/``ignoring``/``group_*`` lists), strings, numbers, durations or
Grafana variables. ``substitute`` replaces Grafana template variables with values, and
``variable_query`` takes apart a Prometheus variable query (``label_values(...)``).
Reads and writes nothing; pure functions.

>>> sorted(metric_names('sum by (le) (rate(http_seconds_bucket{job=~"$job"}[$__rate_interval]))'))
['http_seconds_bucket']
>>> substitute('rate(x{store=~"$store"}[$__rate_interval])',
...            {"store": "S1", "__rate_interval": "1m"})
'rate(x{store=~"S1"}[1m])'
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[A-Za-z_][A-Za-z0-9_:]*\]\])
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![A-Za-z0-9_:]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@])
    """,
    re.VERBOSE,
)

# Words that are never metric names when they stand alone.
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
     "group_left", "group_right", "inf", "nan"}
)
# Aggregation operators: they may be followed by ``by (...)`` instead of ``(``.
AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
     "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
)
# Keywords followed by a parenthesised list of label names.
_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})


class PromQLSyntaxError(ValueError):
    """The expression has a character or bracket PromQL does not allow there."""


def tokens(expr: str) -> Iterator[tuple[str, str]]:
    """(kind, text) for each token of ``expr``, whitespace and comments left out.

    >>> list(tokens('a{b="}"}[5m] offset 1h30m'))  # doctest: +NORMALIZE_WHITESPACE
    [('ident', 'a'), ('op', '{'), ('ident', 'b'), ('op', '='), ('string', '"}"'),
     ('op', '}'), ('op', '['), ('duration', '5m'), ('op', ']'), ('ident', 'offset'),
     ('duration', '1h30m')]
    """
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise PromQLSyntaxError(f"unexpected {expr[pos]!r} at {pos} in {expr!r}")
        kind = match.lastgroup or ""
        if kind not in ("space", "comment"):
            yield kind, match.group()
        pos = match.end()


def metric_names(expr: str) -> set[str]:
    """Every metric name ``expr`` selects.

    >>> sorted(metric_names('a / on (store) group_left (mall) b{x="y"} > bool 0.5'))
    ['a', 'b']
    >>> sorted(metric_names('{__name__="up", job="x"} or histogram_quantile(0.9, c)'))
    ['c', 'up']
    """
    toks = list(tokens(expr))
    names: set[str] = set()
    brackets: list[str] = []
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "op" and text in "({[":
            brackets.append(text)
        elif kind == "op" and text in ")}]":
            if not brackets or {"(": ")", "{": "}", "[": "]"}[brackets.pop()] != text:
                raise PromQLSyntaxError(f"unbalanced {text!r} in {expr!r}")
        elif kind == "ident" and brackets and brackets[-1] == "{":
            if text == "__name__" and nxt == "=" and i + 2 < len(toks):
                names.add(toks[i + 2][1][1:-1])
        elif kind == "ident" and brackets and brackets[-1] == "[":
            pass  # a subquery's or range's content that tokenised as a word
        elif kind == "ident" and text.lower() in _LABEL_LISTS and nxt == "(":
            i = _skip_group(toks, i + 1, expr)
            continue
        elif kind == "ident" and text.lower() in AGGREGATIONS and nxt.lower() in _LABEL_LISTS:
            pass  # `sum by (le) (...)`
        elif kind == "ident" and nxt != "(" and text.lower() not in KEYWORDS:
            names.add(text)
        i += 1
    if brackets:
        raise PromQLSyntaxError(f"unclosed {brackets[-1]!r} in {expr!r}")
    return names


def _skip_group(toks: list[tuple[str, str]], start: int, expr: str) -> int:
    """Index just past the ``(...)`` label list opening at ``start``."""
    for j in range(start + 1, len(toks)):
        if toks[j][1] == ")":
            return j + 1
        if toks[j][0] != "ident" and toks[j][1] != ",":
            break
    raise PromQLSyntaxError(f"bad label list in {expr!r}")


_VARIABLE = re.compile(
    r"\$\{(?P<braced>[A-Za-z0-9_]+)(?::[A-Za-z]+)?\}"
    r"|\[\[(?P<legacy>[A-Za-z0-9_]+)\]\]"
    r"|\$(?P<plain>[A-Za-z_][A-Za-z0-9_]*)"
)


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """``expr`` with every ``$name``, ``${name}``, ``${name:fmt}`` and ``[[name]]`` replaced.

    A variable missing from ``values`` is an error (a KeyError naming it); ``$1`` (a regex
    group reference in ``label_replace``) is not a variable.

    >>> substitute('x{a="${a:regex}", b="[[b]]"} > $c', {"a": "1", "b": "2", "c": "3"})
    'x{a="1", b="2"} > 3'
    >>> substitute('label_replace(y, "d", "$1", "s", "(.*)")', {})
    'label_replace(y, "d", "$1", "s", "(.*)")'
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("legacy") or match.group("plain")
        if name not in values:
            raise KeyError(f"template variable ${name} has no value (in {expr!r})")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def variables_used(expr: str) -> set[str]:
    """Names of the template variables ``expr`` refers to.

    >>> sorted(variables_used('x{a=~"$a"}[$__rate_interval] * ${b}'))
    ['__rate_interval', 'a', 'b']
    """
    return {
        m.group("braced") or m.group("legacy") or m.group("plain") for m in _VARIABLE.finditer(expr)
    }


_LABEL_VALUES = re.compile(r"^\s*label_values\s*\((?P<args>.*)\)\s*$", re.DOTALL)
_QUERY_RESULT = re.compile(r"^\s*query_result\s*\((?P<expr>.*)\)\s*$", re.DOTALL)


def variable_query(query: str) -> tuple[str | None, str | None]:
    """(PromQL expression, label) of a Grafana Prometheus variable query.

    ``label_values(expr, label)`` gives both, ``label_values(label)`` only the label,
    ``query_result(expr)`` only the expression.

    >>> variable_query('label_values(up{job="a,b"}, instance)')
    ('up{job="a,b"}', 'instance')
    >>> variable_query("label_values(mall)"), variable_query("query_result(max(x))")
    ((None, 'mall'), ('max(x)', None))
    """
    match = _LABEL_VALUES.match(query)
    if match:
        args = match.group("args")
        expr, comma, label = args.rpartition(",")
        if not comma:
            return None, args.strip()
        return expr.strip(), label.strip()
    match = _QUERY_RESULT.match(query)
    if match:
        return match.group("expr").strip(), None
    raise ValueError(f"not a label_values(...) or query_result(...) query: {query!r}")
