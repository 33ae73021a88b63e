{{/*
mlobs-core.monitorSince: the window a drift monitor compares, as an SDK duration: its `since`
value, else twice the interval of its schedule (.monitor, .index for the error).
Why: a run that starts late, or a schedule slot that is skipped, must not leave traffic that no
window covers; a schedule with no fixed interval (a list, a range) cannot be doubled, and says so.
*/}}
{{- define "mlobs-core.monitorSince" -}}
{{- $m := .monitor -}}
{{- $s := $m.schedule | trim -}}
{{- $f := splitList " " ($s | replace "\t" " " | regexReplaceAll " +" " ") -}}
{{- $num := "^[0-9]+$" -}}
{{- if $m.since -}}{{ $m.since }}
{{- else if eq $s "@hourly" -}}2h
{{- else if or (eq $s "@daily") (eq $s "@midnight") -}}2d
{{- else if eq $s "@weekly" -}}2w
{{- else if and (eq (len $f) 5) (eq (index $f 2) "*") (eq (index $f 3) "*") -}}
{{- $min := index $f 0 -}}{{- $hour := index $f 1 -}}{{- $dow := index $f 4 -}}
{{- if and (eq $min "*") (eq $hour "*") (eq $dow "*") -}}2m
{{- else if and (regexMatch "^\\*/[0-9]+$" $min) (eq $hour "*") (eq $dow "*") -}}{{ mul 2 (trimPrefix "*/" $min | atoi) }}m
{{- else if and (regexMatch $num $min) (eq $hour "*") (eq $dow "*") -}}2h
{{- else if and (regexMatch $num $min) (regexMatch "^\\*/[0-9]+$" $hour) (eq $dow "*") -}}{{ mul 2 (trimPrefix "*/" $hour | atoi) }}h
{{- else if and (regexMatch $num $min) (regexMatch $num $hour) (eq $dow "*") -}}2d
{{- else if and (regexMatch $num $min) (regexMatch $num $hour) (regexMatch $num $dow) -}}2w
{{- else -}}{{ fail (printf "monitors[%d] (%s): set since: the schedule %q has no fixed interval to double" .index $m.name $s) }}
{{- end -}}
{{- else -}}{{ fail (printf "monitors[%d] (%s): set since: the schedule %q has no fixed interval to double" .index $m.name $s) }}
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
{{- $args = concat $args (list "--capture" "--pushgateway" $url) -}}
{{- toJson $args -}}
{{- end -}}
