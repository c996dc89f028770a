{{/*
The templates of this chart keep to a small subset of Helm's template language, so
that tests/deploy/minihelm.py can render them without helm (it refuses anything
else; docs/deploy.md, "Helm chart"). Actions:

  .Values.a.b  .Release.Name  .Release.Namespace  .Release.Service
  .Chart.Name  .Chart.Version  .Chart.AppVersion  "string" and integer literals
  if PIPELINE / else / end      define "name" / end      include "name" .
  functions: quote, default X, not, toYaml, toToml, nindent N, indent N, sha256sum
  comments, and the whitespace trimming of "{{- " and " -}}"

No range, with, variables, parentheses or other functions.
*/}}

{{- define "streamkm.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "streamkm.labels" -}}
{{ include "streamkm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: worker
app.kubernetes.io/part-of: streamkm
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}
