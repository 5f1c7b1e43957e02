{{/* ---------------------------------------------------------------------------------------
External Redis (redis.external): per-role credentials from Secret keys and a CA file. The
processes put CHANNELS_FLEET_REDIS_USERNAME / _PASSWORD in place of the URLs' user info (no URL
escaping), and verify a rediss:// server's certificate and host name against
CHANNELS_FLEET_REDIS_CA_FILE. Nothing here applies to the built-in cluster.
--------------------------------------------------------------------------------------- */}}
{{- define "channels-fleet.redis.externalCa" -}}
{{- $tls := .Values.redis.external.tls -}}
{{- if and (not (include "channels-fleet.redis.builtin" .)) $tls.enabled (or $tls.caSecret.name $tls.caConfigMap.name) -}}true{{- end -}}
{{- end -}}

{{/* Where the CA bundle is mounted: always ca.crt, whatever its key. */}}
{{- define "channels-fleet.redis.caDir" -}}/etc/channels-fleet/redis-ca{{- end -}}

{{/*
A role's (interface, worker, web) USERNAME, PASSWORD and CA_FILE variables, as list items.
Call with (dict "context" $ "role" "worker").
*/}}
{{- define "channels-fleet.redis.externalEnv" -}}
{{- $x := .context.Values.redis.external -}}
{{- if not (include "channels-fleet.redis.builtin" .context) }}
{{- $role := index $x.auth.roles .role }}
{{- $keys := dict "CHANNELS_FLEET_REDIS_USERNAME" ($role.usernameKey | default $x.auth.usernameKey) "CHANNELS_FLEET_REDIS_PASSWORD" ($role.passwordKey | default $x.auth.passwordKey) }}
{{- if $x.auth.existingSecret }}
{{- range $name := list "CHANNELS_FLEET_REDIS_USERNAME" "CHANNELS_FLEET_REDIS_PASSWORD" }}
{{- with index $keys $name }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $x.auth.existingSecret }}
      key: {{ . }}
{{- end }}
{{- end }}
{{- end }}
{{- if include "channels-fleet.redis.externalCa" .context }}
- name: CHANNELS_FLEET_REDIS_CA_FILE
  value: {{ include "channels-fleet.redis.caDir" .context }}/ca.crt
{{- end }}
{{- end }}
{{- end -}}

{{/* The CA's volume (list item): the external one's, from the Secret or ConfigMap the user names,
or the built-in cluster's ca.crt when redis.tls.enabled. */}}
{{- define "channels-fleet.redis.caVolume" -}}
{{- $tls := .Values.redis.external.tls -}}
{{- if include "channels-fleet.redis.externalCa" . }}
- name: redis-ca
  {{- if $tls.caSecret.name }}
  secret:
    secretName: {{ $tls.caSecret.name }}
    defaultMode: 0444
    items:
      - key: {{ $tls.caSecret.key }}
        path: ca.crt
  {{- else }}
  configMap:
    name: {{ $tls.caConfigMap.name }}
    defaultMode: 0444
    items:
      - key: {{ $tls.caConfigMap.key }}
        path: ca.crt
  {{- end }}
{{- else }}
{{- include "channels-fleet.redis.builtinCaVolume" . }}
{{- end }}
{{- end -}}

{{/*
Refusals of redis.external.auth / .tls and the Redis egress ranges: a YAML list of messages,
each naming the value to set (validateValues adds them to its own).
*/}}
{{- define "channels-fleet.redis.externalRefusals" -}}
{{- $msgs := list -}}
{{- $x := .Values.redis.external -}}
{{- $a := $x.auth -}}
{{- $tls := $x.tls -}}
{{- $roleKeys := list -}}
{{- range $role := list "interface" "worker" "web" -}}
{{- $r := index $a.roles $role -}}
{{- if $r.usernameKey }}{{ $roleKeys = append $roleKeys (printf "redis.external.auth.roles.%s.usernameKey" $role) }}{{ end -}}
{{- if $r.passwordKey }}{{ $roleKeys = append $roleKeys (printf "redis.external.auth.roles.%s.passwordKey" $role) }}{{ end -}}
{{- if and $a.existingSecret (not (or $r.usernameKey $r.passwordKey $a.usernameKey $a.passwordKey)) -}}
{{- $msgs = append $msgs (printf "redis.external.auth: the %s pods read no key of redis.external.auth.existingSecret (%s); set redis.external.auth.passwordKey and/or usernameKey (or redis.external.auth.roles.%s.*), or unset redis.external.auth.existingSecret" $role $a.existingSecret $role) -}}
{{- end -}}
{{- end -}}
{{- if include "channels-fleet.redis.builtin" . -}}
{{- if or $a.existingSecret $roleKeys $tls.enabled $tls.caSecret.name $tls.caConfigMap.name -}}
{{- $msgs = append $msgs "redis.external: redis.external.auth and redis.external.tls are for a Redis you run; set redis.external.url or redis.external.existingSecret (the built-in cluster's password is redis.auth.*)" -}}
{{- end -}}
{{- else -}}
{{- $named := $roleKeys -}}
{{- if $a.usernameKey }}{{ $named = prepend $named "redis.external.auth.usernameKey" }}{{ end -}}
{{- if and (not $a.existingSecret) $named -}}
{{- $msgs = append $msgs (printf "redis.external.auth: set redis.external.auth.existingSecret, the Secret holding the keys %s names" (join ", " $named)) -}}
{{- end -}}
{{- if and $tls.caSecret.name $tls.caConfigMap.name -}}
{{- $msgs = append $msgs "redis.external.tls: set redis.external.tls.caSecret.name or redis.external.tls.caConfigMap.name, not both (one CA bundle)" -}}
{{- end -}}
{{- if and (not $tls.enabled) (or $tls.caSecret.name $tls.caConfigMap.name) -}}
{{- $msgs = append $msgs "redis.external.tls: a CA is only used over TLS; set redis.external.tls.enabled=true (and rediss:// URLs)" -}}
{{- end -}}
{{- if and $tls.enabled $x.url (not $x.existingSecret) -}}
{{- range $i, $url := splitList "," $x.url -}}
{{- if not (hasPrefix "rediss://" (trim $url)) -}}
{{- $msgs = append $msgs (printf "redis.external.url: URL %d of %d does not start with rediss:// while redis.external.tls.enabled=true; use rediss:// (or set redis.external.tls.enabled=false)" (add1 $i) (len (splitList "," $x.url))) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range .Values.networkPolicy.redisEgress.ports -}}
{{- if and (kindIs "map" .) (lt (int .endPort) (int .port)) -}}
{{- $msgs = append $msgs (printf "networkPolicy.redisEgress.ports: set endPort (%v) >= port (%v) in {port: %v, endPort: %v}" .endPort .port .port .endPort) -}}
{{- end -}}
{{- end -}}
{{- toYaml $msgs -}}
{{- end -}}
