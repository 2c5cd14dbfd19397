{{/* Names. */}}
{{- define "qgate-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "qgate-gateway.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "qgate-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "qgate-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "qgate-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "qgate-gateway.labels" -}}
helm.sh/chart: {{ include "qgate-gateway.chart" . }}
{{ include "qgate-gateway.selectorLabels" . }}
app.kubernetes.io/component: gateway
app.kubernetes.io/part-of: qgate
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "qgate-gateway.secretName" -}}
{{- default (include "qgate-gateway.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{/* The port of an address ("0.0.0.0:8080", "[::]:8080"); .key names it in errors. */}}
{{- define "qgate-gateway.addrPort" -}}
{{- $addr := .addr | toString -}}
{{- if not (regexMatch ":[0-9]+$" $addr) -}}
{{- fail (printf "gateway.%s %q has no port" .key $addr) -}}
{{- end -}}
{{- regexFind "[0-9]+$" $addr -}}
{{- end -}}

{{/* The port of gateway.listen: the container port `http`. */}}
{{- define "qgate-gateway.port" -}}
{{- $listen := required "gateway.listen is required (e.g. \"0.0.0.0:8080\")" .Values.gateway.listen -}}
{{- include "qgate-gateway.addrPort" (dict "addr" $listen "key" "listen") -}}
{{- end -}}

{{/* The port of gateway.grpc_listen: the container port `grpc`; empty without gRPC. */}}
{{- define "qgate-gateway.grpcPort" -}}
{{- with .Values.gateway.grpc_listen -}}
{{- $port := include "qgate-gateway.addrPort" (dict "addr" . "key" "grpc_listen") -}}
{{- if eq $port (include "qgate-gateway.port" $) -}}
{{- fail (printf "gateway.grpc_listen %q and gateway.listen use the same port" (toString .)) -}}
{{- end -}}
{{- $port -}}
{{- end -}}
{{- end -}}

{{/* terminationGracePeriodSeconds: the value given, else preStop + shutdown_grace_ms + 10 s;
     never less than preStop + shutdown_grace_ms, or the kubelet kills a draining gateway. */}}
{{- define "qgate-gateway.terminationGrace" -}}
{{- $ms := int64 (default 10000 .Values.gateway.shutdown_grace_ms) -}}
{{- $need := add (div (add $ms 999) 1000) (int64 .Values.preStopSleepSeconds) -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add $need 10 -}}
{{- else -}}
{{- $given := int64 .Values.terminationGracePeriodSeconds -}}
{{- if le $given $need -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + gateway.shutdown_grace_ms (%d s)" $given $need) -}}
{{- end -}}
{{- $given -}}
{{- end -}}
{{- end -}}

{{/*
TOML, for gateway.toml. Helm reads every number of values.yaml as a float64, and toToml
writes 8 as "8.0" and 67108864 as "6.7108864e+07", which the gateway's integer keys refuse;
so the values are written here: whole numbers as integers, other numbers, strings
(JSON escapes are TOML escapes), booleans and arrays of them as TOML does; maps as tables;
a list of maps as an array of tables (`models:` -> one [[models]] table per entry, each
with its plain keys, then its own sub-tables as [models.shadow], ...). Null keys are left
out.
*/}}
{{- define "qgate-gateway.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{/* "true" when the value is a non-empty list of maps (an array of tables); fails on a
     list that mixes maps and other values. */}}
{{- define "qgate-gateway.tomlIsTableArray" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) -}}
{{- $maps := 0 -}}
{{- range . -}}{{- if kindIs "map" . -}}{{- $maps = add1 $maps -}}{{- end -}}{{- end -}}
{{- if eq (int $maps) (len .) -}}
true
{{- else if gt (int $maps) 0 -}}
{{- fail "gateway: a list mixes maps (TOML tables) and other values" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "qgate-gateway.tomlValue" -}}
{{- $k := kindOf . -}}
{{- if eq $k "string" -}}
{{- toJson . -}}
{{- else if eq $k "bool" -}}
{{- . -}}
{{- else if has $k (list "int" "int8" "int16" "int32" "int64" "uint" "uint8" "uint16" "uint32" "uint64") -}}
{{- . -}}
{{- else if has $k (list "float32" "float64") -}}
{{- if and (eq (float64 .) (floor .)) (lt (float64 .) 1e15) (gt (float64 .) -1e15) -}}
{{- int64 . -}}
{{- else -}}
{{- toJson . -}}
{{- end -}}
{{- else if eq $k "slice" -}}
[{{- range $i, $e := . -}}{{- if $i }}, {{ end -}}{{- if kindIs "map" $e -}}{{- fail "gateway: a list of maps is written only as an array of tables, not inside another list" -}}{{- end -}}{{- include "qgate-gateway.tomlValue" $e -}}{{- end -}}]
{{- else -}}
{{- fail (printf "gateway: cannot write a %s value as TOML" $k) -}}
{{- end -}}
{{- end -}}

{{/* One table: its plain keys (sorted), then its sub-tables and arrays of tables (sorted),
     each sub-table with its own keys right after its header. In TOML a header
     [models.shadow] after [[models]] belongs to that (the last) models entry. */}}
{{- define "qgate-gateway.tomlTable" -}}
{{- $prefix := .prefix -}}
{{- range $key, $value := .table -}}
{{- if not (or (kindIs "map" $value) (kindIs "invalid" $value) (include "qgate-gateway.tomlIsTableArray" $value)) }}
{{ include "qgate-gateway.tomlKey" $key }} = {{ include "qgate-gateway.tomlValue" $value }}
{{- end -}}
{{- end -}}
{{- range $key, $value := .table -}}
{{- $name := include "qgate-gateway.tomlKey" $key -}}
{{- if $prefix -}}{{- $name = printf "%s.%s" $prefix $name -}}{{- end -}}
{{- if kindIs "map" $value }}

[{{ $name }}]
{{- include "qgate-gateway.tomlTable" (dict "table" $value "prefix" $name) -}}
{{- else if include "qgate-gateway.tomlIsTableArray" $value -}}
{{- range $entry := $value }}

[[{{ $name }}]]
{{- include "qgate-gateway.tomlTable" (dict "table" $entry "prefix" $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "qgate-gateway.toml" -}}
{{- include "qgate-gateway.tomlTable" (dict "table" .Values.gateway "prefix" "") | trimPrefix "\n" -}}
{{- end -}}
