"""Helpers of the test suite: real servers started for a test (Prometheus, Alertmanager, SMTP),
the exporter in a process of its own, stand-ins for cluster tools, and parsers the checks use.
Stand-ins the benchmark needs too live in pipeline_sdk.testing."""
