{{- define "sshgate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sshgate.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sshgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "sshgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "sshgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sshgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sshgate.hostKeySecretName" -}}
{{- default (printf "%s-host-key" (include "sshgate.fullname" .)) .Values.hostKey.existingSecret -}}
{{- end -}}

{{/* Policy files served: the chart's policies/ (tests excluded by .helmignore) overlaid by policies.files. */}}
{{- define "sshgate.policyFiles" -}}
{{- $files := dict -}}
{{- if .Values.policies.builtin -}}
{{- range $path, $content := .Files.Glob "policies/*.rego" -}}
{{- $_ := set $files (base $path) (toString $content) -}}
{{- end -}}
{{- end -}}
{{- range $name, $content := .Values.policies.files -}}
{{- $_ := set $files $name $content -}}
{{- end -}}
{{- toJson $files -}}
{{- end -}}

{{/*
The gateway config: .Values.config plus what the pod layout fixes (listen port, host key,
data dir, policy files, metrics port). Policy files are listed one by one: a ConfigMap
directory also holds its "..data" copies, which a directory walk would load twice.
*/}}
{{- define "sshgate.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $policies := deepCopy (get $config "policies" | default dict) -}}
{{- $paths := list -}}
{{- range $name, $_ := include "sshgate.policyFiles" . | fromJson -}}
{{- $paths = append $paths (printf "/etc/sshgate/policies/%s" $name) -}}
{{- end -}}
{{- if and (ne (get $policies "engine") "opa") (not $paths) -}}
{{- fail "no policy files: keep policies.builtin true, add policies.files, or use config.policies.engine opa" -}}
{{- end -}}
{{- $_ := set $policies "paths" $paths -}}
{{- $_ := set $config "policies" $policies -}}
{{- $listen := dict "host" "0.0.0.0" "port" (int .Values.ports.ssh) -}}
{{- if .Values.proxyProtocol.enabled -}}
{{- if not .Values.proxyProtocol.trustedProxies -}}
{{- fail "proxyProtocol.enabled needs proxyProtocol.trustedProxies (the load balancer's networks)" -}}
{{- end -}}
{{- $_ := set $listen "proxy_protocol" true -}}
{{- $_ := set $listen "trusted_proxies" .Values.proxyProtocol.trustedProxies -}}
{{- end -}}
{{- $_ := set $config "listen" $listen -}}
{{- if include "sshgate.stateEnabled" . -}}
{{- $state := dict "url" "ENV:SSHGATE_STATE_URL" "hmac_key" "ENV:SSHGATE_STATE_HMAC" -}}
{{- $_ := set $state "key_prefix" .Values.state.keyPrefix -}}
{{- $_ := set $state "timeout_ms" (int .Values.state.timeoutMs) -}}
{{- $_ := set $state "session_ttl_s" (int .Values.state.sessionTtlS) -}}
{{- $_ := set $config "state" $state -}}
{{- end -}}
{{- $_ := set $config "host_keys" (list (printf "/etc/sshgate/host-key/%s" .Values.hostKey.key)) -}}
{{- $_ := set $config "data_dir" "/var/lib/sshgate" -}}
{{- $_ := set $config "metrics" (dict "listen" (printf "0.0.0.0:%d" (int .Values.ports.metrics))) -}}
{{- toYaml $config -}}
{{- end -}}

{{/*
Shared state is on when a store URL is given, inline or in the existing Secret.
*/}}
{{- define "sshgate.stateEnabled" -}}
{{- if or .Values.state.url .Values.state.existingSecret -}}true{{- end -}}
{{- end -}}

{{- define "sshgate.stateSecretName" -}}
{{- .Values.state.existingSecret | default (printf "%s-state" (include "sshgate.fullname" .)) -}}
{{- end -}}
