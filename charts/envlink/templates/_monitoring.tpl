{{/*
envlink's alert rules, as the `groups:` of a Prometheus rule file. One definition serves the
PrometheusRule (prometheusrule.yaml) and deploy/monitoring/prometheus-rules.yaml, which is
this template rendered with the default values (tests/prometheus/render_monitoring.py), so
the two cannot drift. Every metric and label named here is one envlink exports
(src/http/metrics.rs); tests/prometheus/ runs each expression against a live Prometheus
scraping envlink and unit-tests each alert with promtool.
*/}}

{{/* PromQL label matchers of this release's envlink series. */}}
{{- define "envlink.metricsSelector" -}}
{{- default (printf "job=%q" (include "envlink.fullname" .)) .Values.metrics.prometheusRule.selector }}
{{- end }}

{{/* The smaller timeoutSeconds of the enabled webhooks (the mutating one's if none is). */}}
{{- define "envlink.minTimeoutSeconds" -}}
{{- $min := 0 }}
{{- range $w := list .Values.webhook.mutating .Values.webhook.validating }}
{{- if and $w.enabled (or (eq $min 0) (lt (int $w.timeoutSeconds) $min)) }}{{ $min = int $w.timeoutSeconds }}{{ end }}
{{- end }}
{{- if eq $min 0 }}{{ $min = int .Values.webhook.mutating.timeoutSeconds }}{{ end }}
{{- $min }}
{{- end }}

{{/* How to renew the certificate, for the expiry alerts. */}}
{{- define "envlink.renewHint" -}}
{{- $secret := printf "%s/%s" .Release.Namespace (include "envlink.tlsSecretName" .) -}}
{{- if .Values.certManager.enabled -}}
cert-manager should have renewed it {{ .Values.certManager.renewBefore }} before expiry: check `kubectl -n {{ .Release.Namespace }} describe certificate {{ include "envlink.fullname" . }}` and cert-manager's log.
{{- else if .Values.tls.generate -}}
The chart generated it and nothing renews it: `kubectl -n {{ .Release.Namespace }} delete secret {{ include "envlink.tlsSecretName" . }}`, then `helm upgrade` (a new CA and certificate; both caBundles follow).
{{- else -}}
It is the Secret {{ $secret }} you provide: renew it (deploy/gen-certs.sh --force all) and update both webhooks' caBundle if the CA changed.
{{- end }} envlink re-reads the mounted files, no restart needed; if the Secret is renewed but this does not clear, look for "TLS certificate reload failed" in envlink's log (envlink_tls_reloads_total{result="failure"}).
{{- end }}

{{- define "envlink.alertGroups" -}}
{{- $v := .Values.metrics.prometheusRule -}}
{{- $sel := include "envlink.metricsSelector" . -}}
{{- $all := printf "{%s}" $sel -}}
{{- $timeout := include "envlink.minTimeoutSeconds" . | int -}}
{{- $ns := .Release.Namespace -}}
{{- $pods := printf "kubectl -n %s get pods -l app.kubernetes.io/instance=%s" $ns .Release.Name -}}
groups:
  - name: envlink
    rules:
      - alert: EnvlinkCertificateExpiresSoon
        expr: (envlink_tls_certificate_expiry_timestamp_seconds{{ $all }} - time()) < {{ $v.certExpiryWarningDays }} * 86400
        for: 10m
        labels:
          severity: warning
        annotations:
          summary: envlink's serving certificate expires in less than {{ $v.certExpiryWarningDays }}d
          description: >-
            The certificate {{`{{ $labels.instance }}`}} serves expires in
            {{`{{ $value | humanizeDuration }}`}}. Once it has expired the API server refuses the
            TLS handshake and, with failurePolicy Fail, every Pod creation in the cluster.
            {{ include "envlink.renewHint" . }}
      - alert: EnvlinkCertificateExpiryCritical
        expr: (envlink_tls_certificate_expiry_timestamp_seconds{{ $all }} - time()) < {{ $v.certExpiryCriticalDays }} * 86400
        for: 5m
        labels:
          severity: critical
        annotations:
          summary: envlink's serving certificate expires in less than {{ $v.certExpiryCriticalDays }}d
          description: >-
            The certificate {{`{{ $labels.instance }}`}} serves expires in
            {{`{{ $value | humanizeDuration }}`}} (negative: it has expired). Renew it now: after
            expiry no Pod can be created while failurePolicy is Fail.
            {{ include "envlink.renewHint" . }}
      - alert: EnvlinkNoReplicaReady
        # Series of a target that cannot be scraped go stale at once, so this counts the
        # replicas that are up and have completed their first Service list (what /readyz
        # waits for). No series at all counts as none ready.
        expr: (count(envlink_catalog_ready{{ $all }} == 1) or vector(0)) == 0
        for: {{ $v.noReadyReplicaFor }}
        labels:
          severity: critical
        annotations:
          summary: No envlink replica is ready
          description: >-
            No envlink replica has been up and ready for {{ $v.noReadyReplicaFor }}: with
            failurePolicy Fail the API server refuses every Pod creation (and, through the
            validating webhook, workload changes) outside the excluded namespaces. Check
            `{{ $pods }}` and the Pods' events and logs. A replica becomes ready after its
            first full list of Services: look for Service watch errors (API server
            unreachable, RBAC list/watch on Services). If Prometheus simply does not scrape
            envlink, enable metrics.serviceMonitor or fix the scrape job (selector
            {{ $sel }}).
      - alert: EnvlinkReviewsFailing
        expr: sum(rate(envlink_admission_requests_total{{ printf "{%s,decision=%q}" $sel "error" }}[5m])) > {{ $v.httpErrorsPerSecond }}
        for: 10m
        labels:
          severity: warning
        annotations:
          summary: envlink answers reviews with HTTP errors
          description: >-
            envlink answered {{`{{ printf "%.2f" $value }}`}} reviews per second with an HTTP error
            over the last 5 minutes. The API server applies failurePolicy to those: with Fail
            the Pod or workload is refused. Policy refusals are never HTTP errors, so look at
            envlink's "review refused at the HTTP level" log lines (status, error): 413 means
            objects larger than --max-body-bytes, 408 bodies slower than requestTimeout, 400
            or 415 something other than the API server posting to the webhook or a
            misconfigured webhook, 500 an internal error (please report it with the line).
      - alert: EnvlinkReviewLatencyHigh
        expr: histogram_quantile(0.99, sum by (le, endpoint) (rate(envlink_admission_duration_seconds_bucket{{ $all }}[5m]))) > {{ mulf $v.latencyTimeoutRatio $timeout }}
        for: 10m
        labels:
          severity: warning
        annotations:
          summary: envlink's p99 review latency is close to the webhook timeout
          description: >-
            The p99 latency of /{{`{{ $labels.endpoint }}`}} is
            {{`{{ $value | humanizeDuration }}`}}, against a webhook timeoutSeconds of {{ $timeout }}s:
            past it the API server gives up and applies failurePolicy, and every Pod creation
            waits that long. Check CPU throttling of the envlink Pods (resources.limits.cpu),
            their restarts and node pressure, and whether Pods get very many variables
            (envlink_injected_variables). The latency includes reading the request body, so
            a slow or overloaded API server shows here too.
      - alert: EnvlinkCatalogStale
        expr: envlink_catalog_staleness_seconds{{ $all }} > {{ $v.catalogStaleSeconds }}
        for: 1m
        labels:
          severity: warning
        annotations:
          summary: envlink's Service catalog is stale (watch disconnected)
          description: >-
            {{`{{ $labels.instance }}`}} has had no connected Service watch for
            {{`{{ $value | humanizeDuration }}`}}. It keeps serving the last known catalog: Pods
            get the variables of Services as they were, and Services created since are
            missing (with onMissing deny, Pods naming them are refused). Check that the Pod
            reaches the API server (NetworkPolicies, API server health), that the
            ServiceAccount may list and watch Services, envlink's log for watch errors and
            envlink_watch_restarts_total.
      - alert: EnvlinkDenialsSpiking
        expr: |-
          sum(rate(envlink_admission_requests_total{{ printf "{%s,decision=%q}" $sel "denied" }}[10m])) > {{ $v.denialsPerSecond }}
          and
          sum(rate(envlink_admission_requests_total{{ printf "{%s,decision=%q}" $sel "denied" }}[10m]))
            > {{ $v.denialsSpikeFactor }} * (sum(rate(envlink_admission_requests_total{{ printf "{%s,decision=%q}" $sel "denied" }}[1d] offset 10m)) or vector(0))
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: envlink is refusing many more reviews than usual
          description: >-
            envlink refuses {{`{{ printf "%.2f" $value }}`}} reviews per second, more than
            {{ $v.denialsSpikeFactor }} times its rate over the day before. A reserved-variable
            rule suddenly hitting many Pods usually means a device plugin or a Pod template
            changed (a chart now setting NVIDIA_VISIBLE_DEVICES, say), or a Service named in
            envlink.io/services went missing. envlink's "review answered" log lines with
            decision "denied" name the namespace, object and reason; the owners see the same
            reason in their ReplicaSet's or Job's events.
{{- end }}
