{{/*
The path at which Alertmanager reads one key of a Secret: kube-prometheus-stack mounts each Secret
listed in alertmanager.alertmanagerSpec.secrets at /etc/alertmanager/secrets/<name>/.  Takes a
{name, key} value such as alerting.slack.webhookSecret.
Why: every secret of the Alertmanager configuration (the SMTP password, Slack's and Teams'
webhook URLs, a webhook's URL and token) is read from such a file, never written into the config.
*/}}
{{- define "mlobs-core.alerting.secretFile" -}}
/etc/alertmanager/secrets/{{ .name }}/{{ .key }}
{{- end }}
