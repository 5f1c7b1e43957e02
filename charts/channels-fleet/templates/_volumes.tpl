{{/*
A pod's volumes beyond its own, as list items: the Redis CA where it talks to Redis, then the pod
kind's extraVolumes. Call with (dict "context" $ "redis" bool "extra" .Values.x.extraVolumes).
*/}}
{{- define "channels-fleet.extraVolumes" -}}
{{- if .redis }}
{{- include "channels-fleet.redis.caVolume" .context }}
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* A container's mounts of those volumes, as list items; same arguments, "extra" its extraVolumeMounts. */}}
{{- define "channels-fleet.extraVolumeMounts" -}}
{{- if and .redis (or (include "channels-fleet.redis.externalCa" .context) (include "channels-fleet.redis.tlsOn" .context)) }}
- name: redis-ca
  mountPath: {{ include "channels-fleet.redis.caDir" .context }}
  readOnly: true
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}
