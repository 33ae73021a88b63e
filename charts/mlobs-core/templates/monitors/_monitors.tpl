{{/*
mlobs-core.monitorInterval: the seconds between two runs of a drift monitor's schedule, or nothing
when the schedule has no fixed interval (a list, a range, a day of the month) (.monitor).
Why: the window (twice it) and the schedule the monitor pushes (MLDriftMonitorNotRunning fires at
twice it) come from one reading of the schedule.
*/}}
{{- define "mlobs-core.monitorInterval" -}}
{{- $s := .monitor.schedule | trim -}}
{{- $f := splitList " " ($s | replace "\t" " " | regexReplaceAll " +" " ") -}}
{{- $num := "^[0-9]+$" -}}
{{- $every := "^\\*/[0-9]+$" -}}
{{- if eq $s "@hourly" -}}3600
{{- else if or (eq $s "@daily") (eq $s "@midnight") -}}86400
{{- else if eq $s "@weekly" -}}604800
{{- else if and (eq (len $f) 5) (eq (index $f 2) "*") (eq (index $f 3) "*") -}}
{{- $min := index $f 0 -}}{{- $hour := index $f 1 -}}{{- $dow := index $f 4 -}}
{{- if and (eq $min "*") (eq $hour "*") (eq $dow "*") -}}60
{{- else if and (regexMatch $every $min) (eq $hour "*") (eq $dow "*") -}}{{ mul 60 (trimPrefix "*/" $min | atoi) }}
{{- else if and (regexMatch $num $min) (eq $hour "*") (eq $dow "*") -}}3600
{{- else if and (regexMatch $num $min) (regexMatch $every $hour) (eq $dow "*") -}}{{ mul 3600 (trimPrefix "*/" $hour | atoi) }}
{{- else if and (regexMatch $num $min) (regexMatch $num $hour) (eq $dow "*") -}}86400
{{- else if and (regexMatch $num $min) (regexMatch $num $hour) (regexMatch $num $dow) -}}604800
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
mlobs-core.monitorSince: the window a drift monitor compares, as an SDK duration: its `since`
value, else twice the interval of its schedule (.monitor, .index for the error).
Why: a run that starts late, or a schedule slot that is skipped, must not leave traffic that no
window covers; a schedule with no fixed interval cannot be doubled, and says so.
*/}}
{{- define "mlobs-core.monitorSince" -}}
{{- $m := .monitor -}}
{{- $interval := include "mlobs-core.monitorInterval" . -}}
{{- if $m.since -}}{{ $m.since }}
{{- else if not $interval -}}
{{- fail (printf "monitors[%d] (%s): set since: the schedule %q has no fixed interval to double" .index $m.name ($m.schedule | trim)) }}
{{- else -}}
{{- $twice := mul 2 (atoi $interval) -}}
{{- if eq (mod $twice 604800) 0 -}}{{ div $twice 604800 }}w
{{- else if eq (mod $twice 86400) 0 -}}{{ div $twice 86400 }}d
{{- else if eq (mod $twice 3600) 0 -}}{{ div $twice 3600 }}h
{{- else -}}{{ div $twice 60 }}m
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
mlobs-core.monitorArgs: the command line of one drift monitor: `mlobs drift check` of its model
against its baseline over its window, capturing the report as a run and pushing it (.root, .monitor,
.index).
Why: the CronJob and the tests read one command line, built in one place.
*/}}
{{- define "mlobs-core.monitorArgs" -}}
{{- $m := .monitor -}}
{{- $args := list "mlobs" "drift" "check" "--model" $m.model -}}
{{- if $m.version }}{{ $args = concat $args (list "--version" (toString $m.version)) }}{{ end -}}
{{- $args = concat $args (list "--baseline" $m.baseline "--since" (include "mlobs-core.monitorSince" .)) -}}
{{- with $m.features }}{{ $args = concat $args (list "--features" (join "," .)) }}{{ end -}}
{{- range $feature, $threshold := $m.thresholds }}
{{- $args = concat $args (list "--threshold" (printf "%s=%v" $feature $threshold)) -}}
{{- end -}}
{{- $url := .root.Values.pushgateway.url | default (printf "http://%s-pushgateway:9091" .root.Release.Name) -}}
{{- $args = concat $args (list "--capture") -}}
{{- with include "mlobs-core.monitorInterval" . }}{{ $args = concat $args (list "--schedule-seconds" .) }}{{ end -}}
{{- $args = concat $args (list "--pushgateway" $url) -}}
{{- toJson $args -}}
{{- end -}}

{{/*
mlobs-core.influxdbReadEnv: where the read API finds InfluxDB (MLOBS_INFLUXDB_URL, _ORG, _BUCKET and
the token from the InfluxDB Secret): the drift monitors' CronJobs and make demo's monitor run.
Why: a monitor reads the profiles back from the same bucket Fluentd writes, set in one place.
*/}}
{{- define "mlobs-core.influxdbReadEnv" -}}
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
