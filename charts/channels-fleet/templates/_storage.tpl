{{/*
A volumeClaimTemplate named "data" from {enabled, storageClass, size, accessModes}; "-" as the
class means none (pre-bound volumes), empty the cluster's default class.
*/}}
{{- define "channels-fleet.dataClaim" -}}
- metadata:
    name: data
  spec:
    accessModes:
      {{- toYaml .accessModes | nindent 6 }}
    {{- if eq .storageClass "-" }}
    storageClassName: ""
    {{- else if .storageClass }}
    storageClassName: {{ .storageClass | quote }}
    {{- end }}
    resources:
      requests:
        storage: {{ .size | quote }}
{{- end -}}

{{/* A StatefulSet's claim retention: deleted with the release unless asked to keep them. */}}
{{- define "channels-fleet.claimRetention" -}}
persistentVolumeClaimRetentionPolicy:
  whenDeleted: {{ ternary "Delete" "Retain" .deleteOnUninstall }}
  whenScaled: Retain
{{- end -}}
