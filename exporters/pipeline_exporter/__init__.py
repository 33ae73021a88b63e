"""The pipeline exporter: sees every run from the Kubernetes side.

It lists and watches Jobs and Pods labelled ``mlobs.io/pipeline``, derives each
run's state (pending, running, succeeded, failed with a reason), exposes
low-cardinality Prometheus metrics for alerting, and sends one run record per
finished run through Fluentd to InfluxDB, so a run that was OOM-killed or
evicted is recorded although it never got to report itself.
"""
