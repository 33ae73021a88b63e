{{/*
mlobs-core.name: "<release>-<component>", the name of one component's objects.
Why: every object of a component shares one name, so Services, ServiceMonitors and
RBAC bindings refer to each other without repeating the expression.
*/}}
{{- define "mlobs-core.name" -}}
{{- printf "%s-%s" .root.Release.Name .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
mlobs-core.labels: the recommended app.kubernetes.io labels of one component.
Why: selectors and dashboards find the component by them.
*/}}
{{- define "mlobs-core.labels" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/part-of: mlobs
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/*
mlobs-core.selector: the labels a component's selectors match (a subset of the labels).
Why: selector labels must never change after install, unlike the chart version label.
*/}}
{{- define "mlobs-core.selector" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/*
mlobs-core.monitoring: the label kube-prometheus-stack's Prometheus selects ServiceMonitors
and PrometheusRules by (release: <its release name>).
Why: without it Prometheus silently ignores our ServiceMonitors and rules.
*/}}
{{- define "mlobs-core.monitoring" -}}
release: {{ .Values.prometheusRelease | default .Release.Name }}
{{- end -}}

{{/*
mlobs-core.podSecurity and mlobs-core.containerSecurity: the security contexts of every pod
and container: non-root, no privilege escalation, read-only root, no capabilities.
Why: one definition, so no workload of the chart can forget them.
*/}}
{{- define "mlobs-core.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .runAsUser | default 65532 }}
runAsGroup: {{ .runAsUser | default 65532 }}
fsGroup: {{ .runAsUser | default 65532 }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "mlobs-core.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/*
mlobs-core.secretName: the Secret a credential lives in: the user's existing one, or ours.
Why: every credential can be generated on install or referenced, never given in values.
*/}}
{{- define "mlobs-core.secretName" -}}
{{- if .existing -}}{{ .existing }}{{- else -}}{{ printf "%s-%s" .root.Release.Name .component }}{{- end -}}
{{- end -}}

{{/*
mlobs-core.generated: a random credential, kept across upgrades (read back with lookup).
Why: `helm upgrade` must not rotate a password Grafana or InfluxDB already stored.
*/}}
{{- define "mlobs-core.generated" -}}
{{- $previous := lookup "v1" "Secret" .root.Release.Namespace .name -}}
{{- if and $previous (index $previous.data .key) -}}
{{ index $previous.data .key }}
{{- else -}}
{{ randAlphaNum 32 | b64enc }}
{{- end -}}
{{- end -}}

{{/*
mlobs-core.runIdentity: the contract's run identity, injected from the pod's own labels
through the Downward API, and the pod's name, which names the attempt.  Why: the SDK reads
MLOBS_PIPELINE/STEP/RUN_ID, and the labels are the single place a Job states them; a retried
Job makes a new pod per attempt, and the exporter tags its run record with the same name.
*/}}
{{- define "mlobs-core.runIdentity" -}}
- name: MLOBS_PIPELINE
  valueFrom: {fieldRef: {fieldPath: "metadata.labels['mlobs.io/pipeline']"}}
- name: MLOBS_STEP
  valueFrom: {fieldRef: {fieldPath: "metadata.labels['mlobs.io/step']"}}
- name: MLOBS_RUN_ID
  valueFrom: {fieldRef: {fieldPath: "metadata.labels['mlobs.io/run-id']"}}
- name: MLOBS_POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
{{- end -}}

{{/*
mlobs-core.fluentdEnv: where the SDK sends events in the cluster, and the key it proves itself with:
the node forwarders' Service (internalTrafficPolicy Local: the forwarder on the pod's own node),
or the aggregators' when there are no forwarders.
Why: every workload that uses the SDK needs the same variables; Fluentd's <security> refuses a
client without the shared key.
*/}}
{{- define "mlobs-core.fluentdEnv" -}}
- name: MLOBS_FLUENTD_HOST
  value: {{ include "mlobs-core.name" (dict "root" . "component" (ternary "fluentd-forwarder" "fluentd" .Values.fluentd.forwarder.enabled)) }}
- name: MLOBS_FLUENTD_PORT
  value: "24224"
- name: MLOBS_FLUENTD_SHARED_KEY
  valueFrom:
    secretKeyRef: {name: {{ include "mlobs-core.forwardSecret" . }}, key: shared-key}
- name: MLOBS_HOME
  value: /tmp/mlobs
{{- end -}}

{{/*
mlobs-core.forwardSecret and mlobs-core.userHashSecret: the Secrets of the Forward shared key
(key shared-key) and of the model API's user-hash key (key user-hash-key): existing or generated.
Why: Fluentd and every SDK pod must read the very same key, so its Secret is named in one place.
*/}}
{{- define "mlobs-core.forwardSecret" -}}
{{- include "mlobs-core.secretName" (dict "root" . "component" "fluentd-forward" "existing" .Values.secrets.fluentdSharedKey) -}}
{{- end -}}

{{- define "mlobs-core.userHashSecret" -}}
{{- include "mlobs-core.secretName" (dict "root" . "component" "user-hash" "existing" .Values.secrets.userHashKey) -}}
{{- end -}}

{{/*
mlobs-core.peer: a NetworkPolicy peer: the pods with the labels .labels in the namespace .namespace
(empty: the release namespace), named by its kubernetes.io/metadata.name label.
Why: every policy admits its peers the same way; an explicit namespace keeps a peer from matching
same-labelled pods of another namespace, and from missing them when the policy moves.
*/}}
{{- define "mlobs-core.peer" -}}
- podSelector:
    matchLabels: {{- toYaml .labels | nindent 6 }}
  namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: {{ .namespace | default .root.Release.Namespace }}}
{{- end -}}

{{/*
mlobs-core.probeRule: an ingress rule admitting values.networkPolicy.probeFrom on the probed ports
(.ports, container port names or numbers); include it only when probeFrom is not empty, as an
empty `from` would admit every source.
Why: a network plugin that filters a node's own traffic to its pods would fail the kubelet's
probes; the NetworkPolicy API allows that traffic and kindnet does, so by default no rule is added.
*/}}
{{- define "mlobs-core.probeRule" -}}
- ports:
    {{- range $port := .ports }}
    - {port: {{ $port }}, protocol: TCP}
    {{- end }}
  from: {{- toYaml .root.Values.networkPolicy.probeFrom | nindent 4 }}
{{- end -}}

{{/*
mlobs-core.image: "repository:tag" of one of values.images.
Why: images are pinned in one place of the values.
*/}}
{{- define "mlobs-core.image" -}}
{{- $image := index .root.Values.images .name -}}
{{ printf "%s:%s" $image.repository $image.tag }}
{{- end -}}
