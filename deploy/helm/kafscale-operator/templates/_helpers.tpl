{{/*
Chart name, truncated to the 63 characters a label value may hold.
*/}}
{{- define "kafscale-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's resources. The release name is used alone when it
already contains the chart name.
*/}}
{{- define "kafscale-operator.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "kafscale-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select the operator's pods (stable across upgrades).
*/}}
{{- define "kafscale-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kafscale-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of every resource of the chart. part-of=kafscale is what the PodMonitor
selects, for the operator as for the gateways and workers it runs.
*/}}
{{- define "kafscale-operator.labels" -}}
helm.sh/chart: {{ include "kafscale-operator.chart" . }}
{{ include "kafscale-operator.selectorLabels" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: kafscale
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The operator's ServiceAccount name.
*/}}
{{- define "kafscale-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kafscale-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image, repository:tag (tag defaults to the chart's appVersion).
*/}}
{{- define "kafscale-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The RBAC rules the operator needs in the namespaces it watches.
*/}}
{{- define "kafscale-operator.rules" -}}
# The KafScale resources, their status subresources and finalizers.
- apiGroups: ["kafscale.io"]
  resources:
    - kafscaleclusters
    - kafscaleclusters/status
    - kafscaleclusters/finalizers
    - kafscaletopics
    - kafscaletopics/status
    - kafscaletopics/finalizers
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# Gateways (Deployment) and log workers (StatefulSet).
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# Gateway and worker Services, and the ConfigMap of KAFSCALE_* settings.
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# S3 and etcd credentials referenced by a KafscaleCluster (read only).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
{{- end }}
