{{/*
TLS of the built-in cluster (redis.tls.enabled): TLS only, clients to nodes and node to node
(files/redis/node.sh). The certificate is a Secret with ca.crt, tls.crt and tls.key: the user's
(redis.tls.existingSecret, e.g. cert-manager's), or <redis>-tls, made once in the cluster by the
secrets Job's `tls` kind (channels_fleet.kube.tls) for the names below.
*/}}
{{- define "channels-fleet.redis.tlsOn" -}}
{{- if and (include "channels-fleet.redis.builtin" .) .Values.redis.tls.enabled -}}true{{- end -}}
{{- end -}}

{{- define "channels-fleet.redis.tlsSecretName" -}}
{{- .Values.redis.tls.existingSecret | default (include "channels-fleet.componentName" (dict "context" . "component" "redis-tls")) -}}
{{- end -}}

{{/* The names a node's certificate must cover: the client Service's and every pod's (headless). */}}
{{- define "channels-fleet.redis.tlsDnsNames" -}}
{{- $svc := include "channels-fleet.redis.fullname" . -}}
{{- $headless := include "channels-fleet.redis.headless" . -}}
{{- $ns := .Release.Namespace -}}
{{- toYaml (list $svc (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) (printf "*.%s.%s.svc" $headless $ns) (printf "*.%s.%s.svc.cluster.local" $headless $ns)) -}}
{{- end -}}

{{/* The generated Secret as an item of the secrets Job (channels-fleet.generatedSecrets). */}}
{{- define "channels-fleet.redis.tlsSecretItem" -}}
{{- toYaml (dict "secret" (include "channels-fleet.redis.tlsSecretName" .) "key" "tls.crt" "kind" "tls" "options" (dict "dnsNames" (include "channels-fleet.redis.tlsDnsNames" . | fromYamlArray))) -}}
{{- end -}}

{{- define "channels-fleet.redis.scheme" -}}
{{- if include "channels-fleet.redis.tlsOn" . -}}rediss{{- else -}}redis{{- end -}}
{{- end -}}

{{/* The CA in the URL too (redis-py's ssl_ca_certs), for clients that read only the URL (the
project's CHANNEL_LAYERS hosts); CHANNELS_FLEET_REDIS_CA_FILE names the same file. */}}
{{- define "channels-fleet.redis.urlQuery" -}}
{{- if include "channels-fleet.redis.tlsOn" . -}}?ssl_ca_certs=/etc/channels-fleet/redis-ca/ca.crt{{- end -}}
{{- end -}}

{{/* An app container's CA bundle (CHANNELS_FLEET_REDIS_CA_FILE); the volume is redis.caVolume's. */}}
{{- define "channels-fleet.redis.caEnv" -}}
{{- if include "channels-fleet.redis.tlsOn" . }}
- name: CHANNELS_FLEET_REDIS_CA_FILE
  value: /etc/channels-fleet/redis-ca/ca.crt
{{- end }}
{{- end -}}

{{- define "channels-fleet.redis.builtinCaVolume" -}}
{{- if include "channels-fleet.redis.tlsOn" . }}
# Only the CA of the built-in cluster's certificate (never its key).
- name: redis-ca
  secret:
    secretName: {{ include "channels-fleet.redis.tlsSecretName" . }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end -}}
