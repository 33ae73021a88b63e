"""Metric names of a PromQL expression, read by a real PromQL parser (PyPI ``promql-parser``).

    >>> sorted(metric_names('sum by (job) (rate(http_requests_total{job="api"}[5m])) / on(job) up'))
    ['http_requests_total', 'up']

Every vector selector is one metric: its name, or the exact ``{__name__="..."}`` it matches.
A selector that names no exact metric (``{job="api"}``, ``{__name__=~"http_.*"}``) cannot be
checked against a list of names, so it is an error, as a syntax error is.
"""

from __future__ import annotations

import promql_parser


class PromQLError(ValueError):
    """An expression that does not parse, or a selector without an exact metric name."""


def parse(expr: str) -> promql_parser.Expr:
    """The expression's syntax tree; PromQLError naming the expression and the parser's reason."""
    try:
        return promql_parser.parse(expr)
    except ValueError as exc:
        raise PromQLError(f"{expr!r} is not PromQL: {exc}") from None


def metric_names(expr: str) -> frozenset[str]:
    """The names of the metrics ``expr`` selects (not its functions, labels or keywords)."""
    names: set[str] = set()
    unnamed: list[str] = []

    def visit(node: promql_parser.Expr) -> None:
        if not isinstance(node, promql_parser.VectorSelector):
            return
        if node.name:
            names.add(node.name)
            return
        exact = [
            m.value
            for m in node.matchers.matchers
            if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal
        ]
        if exact:
            names.update(exact)
        else:
            unnamed.append(node.prettify())

    promql_parser.walk(parse(expr), visit)
    if unnamed:
        raise PromQLError(f"{expr!r}: selectors without an exact metric name: {unnamed}")
    return frozenset(names)


def grouping_labels(expr: str) -> frozenset[str]:
    """The labels of every ``by (...)`` aggregation in ``expr``: what its series are told apart by."""
    labels: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        modifier = getattr(node, "modifier", None) if isinstance(node, promql_parser.AggregateExpr) else None
        if modifier is not None and modifier.type == promql_parser.AggModifierType.By:
            labels.update(modifier.labels)

    promql_parser.walk(parse(expr), visit)
    return frozenset(labels)
