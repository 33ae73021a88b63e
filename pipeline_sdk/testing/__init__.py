"""Stand-ins for what cannot run on a machine without a cluster, for tests and benchmarks.

* :mod:`pipeline_sdk.testing.forward_server`: a Fluentd Forward-protocol receiver that records
  what it acknowledges (``python -m pipeline_sdk.testing.forward_server``);
* :mod:`pipeline_sdk.testing.kube_objects`: Jobs and Pods built from the ``kubernetes``
  client's own models, as an API server serves them (needs the ``exporter`` extra);
* :mod:`pipeline_sdk.testing.kube_fake`: an HTTP server speaking the Kubernetes API's list and
  watch for those objects (``python -m pipeline_sdk.testing.kube_fake``);
* :mod:`pipeline_sdk.testing.influx_fake`: InfluxDB 2's query API over the local store,
  answering in annotated CSV (``python -m pipeline_sdk.testing.influx_fake``).

Each binds 127.0.0.1 only.  Nothing in the SDK imports this package.
"""
