{{/*
mlobs-core.demoInfluxdbEnv: where the read API finds InfluxDB (MLOBS_INFLUXDB_URL, _ORG, _BUCKET and
the token from the InfluxDB Secret), as the drift monitors' CronJobs set it.
Why: make demo's monitor run reads the profiles back from the same bucket Fluentd writes.
*/}}
{{- define "mlobs-core.demoInfluxdbEnv" -}}
- name: MLOBS_INFLUXDB_URL
  value: {{ .Values.fluentd.influxdb.url | default (printf "http://%s-influxdb2:80" .Release.Name) | quote }}
- name: MLOBS_INFLUXDB_ORG
  value: {{ .Values.fluentd.influxdb.org | quote }}
- name: MLOBS_INFLUXDB_BUCKET
  value: {{ .Values.fluentd.influxdb.bucket | quote }}
- name: MLOBS_INFLUXDB_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "mlobs-core.secretName" (dict "root" . "component" "influxdb-auth" "existing" .Values.secrets.influxdb) }}
      key: admin-token
{{- end -}}
