{{/* Chart name, at most 63 characters. */}}
{{- define "mailsec-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release name already contains the chart name. */}}
{{- define "mailsec-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mailsec-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the chart, with global.commonLabels (the chart's own win). */}}
{{- define "mailsec-operator.labels" -}}
{{- $own := include "mailsec-operator.selectorLabels" . | fromYaml }}
{{- $_ := set $own "helm.sh/chart" (include "mailsec-operator.chart" .) }}
{{- $_ = set $own "app.kubernetes.io/version" .Chart.AppVersion }}
{{- $_ = set $own "app.kubernetes.io/component" "operator" }}
{{- $_ = set $own "app.kubernetes.io/part-of" "mailsec" }}
{{- $_ = set $own "app.kubernetes.io/managed-by" .Release.Service }}
{{- merge $own (deepCopy (((.Values.global).commonLabels) | default dict)) | toYaml }}
{{- end }}

{{/* Labels of the CRDs: those of every object, component crds. */}}
{{- define "mailsec-operator.crdLabels" -}}
{{- $labels := include "mailsec-operator.labels" . | fromYaml }}
{{- $_ := set $labels "app.kubernetes.io/component" "crds" }}
{{- toYaml $labels }}
{{- end }}

{{/* global.commonLabels alone, for objects whose labels are otherwise fixed. */}}
{{- define "mailsec-operator.commonLabels" -}}
{{- with ((.Values.global).commonLabels) }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the operator's pods (never change them in an upgrade). */}}
{{- define "mailsec-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mailsec-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mailsec-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mailsec-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mailsec-operator.leaseName" -}}
{{- default (include "mailsec-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* [registry/]repository(@digest|:tag); the digest wins over the tag. */}}
{{- define "mailsec-operator.image" -}}
{{- $repository := .Values.image.repository }}
{{- with .Values.image.registry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* global.imagePullSecrets, then the deprecated top-level imagePullSecrets. */}}
{{- define "mailsec-operator.imagePullSecrets" -}}
{{- $secrets := concat (((.Values.global).imagePullSecrets) | default list) (.Values.imagePullSecrets | default list) | uniq }}
{{- with $secrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Label matchers that select this release's series in the alerts and the dashboard. */}}
{{- define "mailsec-operator.seriesSelector" -}}
{{- default (printf "job=%q, namespace=%q" (printf "%s-metrics" (include "mailsec-operator.fullname" .)) .Release.Namespace) .Values.prometheusRule.seriesSelector }}
{{- end }}
