{{/* Names. The release name is the prefix of every object: "karpenter" gives karpenter-controller and karpenter-webhook. */}}
{{- define "karpenter.name" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "karpenter.controller.name" -}}
{{- printf "%s-controller" (include "karpenter.name" .) -}}
{{- end -}}

{{- define "karpenter.webhook.name" -}}
{{- printf "%s-webhook" (include "karpenter.name" .) -}}
{{- end -}}

{{/* Labels common to every object. */}}
{{- define "karpenter.labels" -}}
app.kubernetes.io/part-of: karpenter
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.additionalLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "controller"). */}}
{{- define "karpenter.selector" -}}
app.kubernetes.io/name: {{ printf "karpenter-%s" .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* Image of one component: (dict "root" $ "image" .Values.controller.image). */}}
{{- define "karpenter.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* Checks that the schema cannot express; fails naming the value. */}}
{{- define "karpenter.validate" -}}
{{- $_ := required "clusterName is required: the EKS cluster's name (--set clusterName=...)" .Values.clusterName -}}
{{- if and .Values.webhook.tls.existingSecret (not .Values.webhook.tls.caBundle) -}}
{{- fail "webhook.tls.caBundle is required with webhook.tls.existingSecret: the base64 PEM of the CA that signed its certificate" -}}
{{- end -}}
{{- if and .Values.webhook.tls.caBundle (not .Values.webhook.tls.existingSecret) -}}
{{- fail "webhook.tls.caBundle is only used with webhook.tls.existingSecret; set both or neither" -}}
{{- end -}}
{{- end -}}

{{/* Scheduling shared by both Deployments: (dict "root" $ "component" "controller"). */}}
{{- define "karpenter.scheduling" -}}
{{- with .root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .root.Values.spreadOverNodes }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "karpenter.selector" . | nindent 8 }}
{{- end }}
{{- with .root.Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* The container security context of both binaries. */}}
{{- define "karpenter.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}
