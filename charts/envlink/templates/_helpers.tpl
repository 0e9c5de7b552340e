{{/* Chart name, possibly overridden. */}}
{{- define "envlink.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the prefix of every object. Truncated to 52 so suffixes like "-validating" and
"-tls" still fit the 63-character limit of names and labels.
*/}}
{{- define "envlink.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "envlink.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "envlink.labels" -}}
helm.sh/chart: {{ include "envlink.chart" . }}
{{ include "envlink.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: envlink
{{- end }}

{{/* Labels that select the Pods: never change them (Deployment selectors are immutable). */}}
{{- define "envlink.selectorLabels" -}}
app.kubernetes.io/name: {{ include "envlink.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "envlink.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "envlink.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "envlink.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "envlink.tlsSecretName" -}}
{{- printf "%s-tls" (include "envlink.fullname" .) }}
{{- end }}

{{- define "envlink.serviceName" -}}
{{- include "envlink.fullname" . }}
{{- end }}

{{/* The DNS names the API server uses to reach the Service. */}}
{{- define "envlink.dnsNames" -}}
{{- $svc := include "envlink.serviceName" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson }}
{{- end }}

{{/*
Chart-generated TLS material, computed once per render and shared by the Secret and both
webhook configurations (they are separate templates, but a render shares its root context).
An existing Secret is looked up and reused as long as it holds tls.crt, tls.key and ca.crt,
so `helm upgrade` does not rotate the CA under running Pods. During `helm lint` and
`helm template` lookup returns nothing, so fresh (throw-away) material is generated.
Usage: include "envlink.tls.ensure" . ; then .envlinkTLS.{ca,crt,key} (base64 PEM).
*/}}
{{- define "envlink.tls.ensure" -}}
{{- if not (hasKey . "envlinkTLS") }}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "envlink.tlsSecretName" .) }}
{{- $data := dict }}
{{- if $secret }}{{- $data = default dict $secret.data }}{{- end }}
{{- if and (index $data "tls.crt") (index $data "tls.key") (index $data "ca.crt") }}
{{- $_ := set . "envlinkTLS" (dict "ca" (index $data "ca.crt") "crt" (index $data "tls.crt") "key" (index $data "tls.key") "reused" true) }}
{{- else }}
{{- $days := int .Values.tls.validityDays }}
{{- $ca := genCA (printf "%s-ca" (include "envlink.fullname" .)) $days }}
{{- $dns := include "envlink.dnsNames" . | fromJsonArray }}
{{- $cert := genSignedCert (printf "%s.%s.svc" (include "envlink.serviceName" .) .Release.Namespace) nil $dns $days $ca }}
{{- $_ := set . "envlinkTLS" (dict "ca" ($ca.Cert | b64enc) "crt" ($cert.Cert | b64enc) "key" ($cert.Key | b64enc) "reused" false) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The clientConfig.caBundle line of a webhook, or nothing (cert-manager injects it; with
tls.generate=false and no webhook.caBundle the admin patches it in later).
*/}}
{{- define "envlink.caBundle" -}}
{{- if .Values.certManager.enabled }}
{{- else if .Values.tls.generate }}
{{- include "envlink.tls.ensure" . }}
caBundle: {{ .envlinkTLS.ca }}
{{- else if .Values.webhook.caBundle }}
caBundle: {{ .Values.webhook.caBundle }}
{{- end }}
{{- end }}

{{/* Annotations shared by both webhook configurations. */}}
{{- define "envlink.webhookAnnotations" -}}
{{- if .Values.certManager.enabled }}
cert-manager.io/inject-ca-from: {{ printf "%s/%s" .Release.Namespace (include "envlink.fullname" .) }}
{{- end }}
{{- end }}

{{/*
namespaceSelector shared by both webhooks: skip namespaces labelled with the opt-out label,
and the excluded namespaces by name (kubernetes.io/metadata.name, set by Kubernetes >= 1.21).
*/}}
{{- define "envlink.namespaceSelector" -}}
{{- $names := uniq (append .Values.webhook.excludeNamespaces .Release.Namespace) -}}
matchExpressions:
  - key: {{ .Values.webhook.optOutLabel }}
    operator: NotIn
    values: ["true"]
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values: {{ toJson $names }}
{{- with .Values.webhook.extraNamespaceSelectorExpressions }}
{{ toYaml . | indent 2 }}
{{- end }}
{{- end }}

{{/* clientConfig.service of a webhook; argument: (list $ "/path"). */}}
{{- define "envlink.clientConfig" -}}
{{- $ := index . 0 -}}
service:
  name: {{ include "envlink.serviceName" $ }}
  namespace: {{ $.Release.Namespace }}
  path: {{ index . 1 }}
  port: {{ $.Values.service.port }}
{{- with include "envlink.caBundle" $ | trim }}
{{ . }}
{{- end }}
{{- end }}

{{/*
A duration such as 500ms, 8s or 2m in milliseconds (the format of envlink's --request-timeout).
*/}}
{{- define "envlink.durationMs" -}}
{{- $d := toString . }}
{{- if hasSuffix "ms" $d }}{{ trimSuffix "ms" $d | int }}
{{- else if hasSuffix "s" $d }}{{ mul (trimSuffix "s" $d | int) 1000 }}
{{- else if hasSuffix "m" $d }}{{ mul (trimSuffix "m" $d | int) 60000 }}
{{- else }}{{ mul ($d | int) 1000 }}
{{- end }}
{{- end }}

{{/* Checks across values that the schema cannot express. */}}
{{- define "envlink.validate" -}}
{{- if and .Values.metrics.enabled (eq (int .Values.metrics.port) (int .Values.webhook.port)) }}
{{- fail (printf "metrics.port and webhook.port are both %d: envlink needs two ports (or set metrics.enabled=false)" (int .Values.webhook.port)) }}
{{- end }}
{{- if and .Values.audit.policyReports (not .Values.audit.interval) }}
{{- fail "audit.policyReports needs audit.interval (the periodic audit writes the PolicyReports)" }}
{{- end }}
{{- $min := 0 }}
{{- range $w := list .Values.webhook.mutating .Values.webhook.validating }}
{{- if and $w.enabled (or (eq $min 0) (lt (int $w.timeoutSeconds) $min)) }}{{ $min = int $w.timeoutSeconds }}{{ end }}
{{- end }}
{{- if gt $min 0 }}
{{- $req := include "envlink.durationMs" .Values.requestTimeout | int }}
{{- if ge $req (mul $min 1000) }}
{{- fail (printf "requestTimeout (%s) must be below the webhooks' timeoutSeconds (%ds), so that envlink answers before the API server gives up" .Values.requestTimeout $min) }}
{{- end }}
{{- end }}
{{- end }}
