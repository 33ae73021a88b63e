"""Prometheus exporters of mlobs."""
