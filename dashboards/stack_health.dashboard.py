"""Stack health: is the observability stack itself working?  Scrape targets up,
Fluentd's buffer, retries and output errors, InfluxDB write errors, Alertmanager
notifications sent and failed, and the pipeline exporter's watch errors."""

from dashboards.builders import Layout, PromTarget, stat, table, timeseries
from dashboards.builders import dashboard as make_dashboard
from pipeline_sdk import contract as c

FLUENTD = f'job="{c.PROM_JOB_FLUENTD}"'
layout = Layout()

panels = [
    stat(
        layout,
        "Pipeline exporter up",
        [PromTarget(f'max(up{{job="{c.PROM_JOB_EXPORTER}"}})')],
        description="1 when Prometheus scrapes the pipeline exporter.",
    ),
    stat(
        layout, "Fluentd up", [PromTarget(f"max(up{{{FLUENTD}}})")], description="1 when a Fluentd answers."
    ),
    stat(
        layout,
        "Runs tracked by the exporter",
        [PromTarget(f"sum({c.PROM_EXPORTER_TRACKED_RUNS})")],
        description="Runs the exporter holds in memory (active, and finished ones remembered).",
    ),
    stat(
        layout,
        "Run records dropped",
        [PromTarget(f"sum({c.PROM_EXPORTER_RECORDS_DROPPED})")],
        description="Run records the exporter's transport refused (should stay 0).",
    ),
    table(
        layout,
        "Scrape targets",
        [PromTarget('up{job=~"mlobs-.*"}', instant=True, table=True)],
        description="Every target of the mlobs scrape jobs and whether it answers.",
        w=12,
        h=8,
    ),
    timeseries(
        layout,
        "Exporter watch errors and relists",
        [
            PromTarget(
                f"sum by (resource) (increase({c.PROM_EXPORTER_WATCH_ERRORS}[$__rate_interval]))",
                legend="errors {{resource}}",
            ),
            PromTarget(
                f"sum by (resource) (increase({c.PROM_EXPORTER_RELISTS}[$__rate_interval]))",
                legend="relists {{resource}}",
                ref_id="B",
            ),
        ],
        description="API errors of the exporter's watches, and full lists (after a watch expired).",
        w=12,
        h=8,
    ),
    timeseries(
        layout,
        "Fluentd buffer",
        [
            PromTarget(
                f"sum by (pod, plugin_id) ({c.PROM_FLUENTD_BUFFER_BYTES}{{{FLUENTD}}})",
                legend="{{pod}} {{plugin_id}}",
            )
        ],
        description="Bytes waiting in Fluentd's file buffer per output.",
        unit="bytes",
        w=8,
    ),
    timeseries(
        layout,
        "Fluentd retries",
        [
            PromTarget(
                f"max by (pod, plugin_id) ({c.PROM_FLUENTD_OUTPUT_RETRIES}{{{FLUENTD}}})",
                legend="{{pod}} {{plugin_id}}",
            )
        ],
        description="Current retry count per output (0 when writes succeed).",
        w=8,
    ),
    timeseries(
        layout,
        "Fluentd output errors",
        [
            PromTarget(
                f"sum by (pod, plugin_id) (increase({c.PROM_FLUENTD_OUTPUT_ERRORS}{{{FLUENTD}}}[$__rate_interval]))",
                legend="{{pod}} {{plugin_id}}",
            )
        ],
        description="Write errors per output.",
        w=8,
    ),
    timeseries(
        layout,
        "InfluxDB write errors",
        [
            PromTarget(
                f'sum by (status) (rate({c.PROM_INFLUXDB_HTTP_REQUESTS}{{path="{c.INFLUXDB_WRITE_PATH}", status=~"4XX|5XX"}}[$__rate_interval]))',
                legend="{{status}}",
            )
        ],
        description="Writes InfluxDB refused (4XX) or failed (5XX).",
        unit="reqps",
    ),
    timeseries(
        layout,
        "Alertmanager notifications",
        [
            PromTarget(
                f"sum by (integration) (rate({c.PROM_ALERTMANAGER_NOTIFICATIONS}[$__rate_interval]))",
                legend="sent {{integration}}",
            ),
            PromTarget(
                f"sum by (integration) (rate({c.PROM_ALERTMANAGER_NOTIFICATIONS_FAILED}[$__rate_interval]))",
                legend="failed {{integration}}",
                ref_id="B",
            ),
        ],
        description="Notifications Alertmanager sent and failed to send (email).",
        unit="ops",
    ),
]

dashboard = make_dashboard(
    "stack_health",
    "mlobs / Stack health",
    "Is the observability stack itself working? Targets, Fluentd, InfluxDB, Alertmanager, the exporter.",
    panels,
    time_from="now-6h",
)
