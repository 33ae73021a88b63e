"""Grafana dashboards as code: one grafanalib dashboard per ``<name>.dashboard.py``.

``make generate`` renders them to ``dashboards/json/<name>.json`` (committed);
``make test`` fails when the committed JSON drifts from the sources.
"""
