{{/*
Naming and labelling helpers. Nothing here reads the cluster or draws random values, so
`helm template` output depends only on the chart and its values (GitOps tools render it offline).
*/}}

{{/* The chart name, overridable. */}}
{{- define "kube-changejob.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource name: the release name, plus the chart name unless it is in it. */}}
{{- define "kube-changejob.fullname" -}}
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

{{/* A name that must be a DNS-1035 label (Services): the prefix is cut so the suffix fits 63. */}}
{{- define "kube-changejob.shortname" -}}
{{- $root := index . 0 }}
{{- $suffix := index . 1 }}
{{- $max := sub 62 (len $suffix) | int }}
{{- printf "%s-%s" (include "kube-changejob.fullname" $root | trunc $max | trimSuffix "-") $suffix }}
{{- end }}

{{- define "kube-changejob.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "kube-changejob.labels" -}}
helm.sh/chart: {{ include "kube-changejob.chart" . }}
app.kubernetes.io/name: {{ include "kube-changejob.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kube-changejob
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the operator Pods (immutable once deployed). */}}
{{- define "kube-changejob.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kube-changejob.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller-manager
{{- end }}

{{- define "kube-changejob.deploymentName" -}}
{{- printf "%s-controller-manager" (include "kube-changejob.fullname" .) }}
{{- end }}

{{- define "kube-changejob.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-controller-manager" (include "kube-changejob.fullname" .)) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kube-changejob.webhookServiceName" -}}
{{- include "kube-changejob.shortname" (list . "webhook-service") }}
{{- end }}

{{- define "kube-changejob.metricsServiceName" -}}
{{- include "kube-changejob.shortname" (list . "metrics-service") }}
{{- end }}

{{- define "kube-changejob.validatingWebhookName" -}}
{{- printf "%s-validating-webhook" (include "kube-changejob.fullname" .) }}
{{- end }}

{{/* The admission rules of the webhook: spec writes of ChangeTriggeredJobs (never /status). */}}
{{- define "kube-changejob.webhookRules" -}}
- apiGroups: [triggers.changejob.dev]
  apiVersions: [v1alpha]
  operations: [CREATE, UPDATE]
  resources: [changetriggeredjobs]
  scope: Namespaced
{{- end }}

{{- define "kube-changejob.certificateName" -}}
{{- printf "%s-serving-cert" (include "kube-changejob.fullname" .) }}
{{- end }}

{{- define "kube-changejob.certificateSecretName" -}}
{{- printf "%s-webhook-cert" (include "kube-changejob.fullname" .) }}
{{- end }}

{{/* The operator image reference: repository@digest, or repository:tag (default appVersion). */}}
{{- define "kube-changejob.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Whether the operator is confined to a list of namespaces. */}}
{{- define "kube-changejob.namespaced" -}}
{{- if .Values.watch.namespaces }}true{{ end }}
{{- end }}

{{/*
RBAC rules for the watched resource types. Argument: (list $root $scope) where $scope is
"all" (every entry), "namespaced" (entries without clusterScoped) or "cluster" (clusterScoped only).
*/}}
{{- define "kube-changejob.watchRules" -}}
{{- $root := index . 0 }}
{{- $scope := index . 1 }}
{{- if and $root.Values.watch.allResources (ne $scope "cluster") }}
- apiGroups: ["*"]
  resources: ["*"]
  verbs: [get, list, watch]
{{- else if not $root.Values.watch.allResources }}
{{- range $root.Values.watch.resources }}
{{- if or (eq $scope "all") (and (eq $scope "cluster") .clusterScoped) (and (eq $scope "namespaced") (not .clusterScoped)) }}
- apiGroups: [{{ .apiGroup | quote }}]
  resources: {{ toJson .resources }}
  verbs: [get, list, watch]
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* RBAC rules the operator needs where CTJs live: Jobs (create, prune, index) and Events. */}}
{{- define "kube-changejob.workloadRules" -}}
- apiGroups: [batch]
  resources: [jobs]
  verbs: [create, delete, get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* The webhooks' namespaceSelector: the configured one, or in namespaced mode the watched namespaces. */}}
{{- define "kube-changejob.webhookNamespaceSelector" -}}
{{- if .Values.webhook.namespaceSelector }}
{{- toYaml .Values.webhook.namespaceSelector }}
{{- else if .Values.watch.namespaces -}}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: In
    values:
      {{- toYaml .Values.watch.namespaces | nindent 6 }}
{{- else -}}
{}
{{- end }}
{{- end }}
