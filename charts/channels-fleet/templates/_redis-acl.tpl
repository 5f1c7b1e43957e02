{{/*
The built-in cluster's users, one per role (redis.acl.enabled): exactly docs/redis-acl.md's
lines, the relay's key patterns under config.keyPrefix and the project layer's under
redis.acl.layerPrefix. An ACL file with each password as `>ROLE-password`, which node.sh
replaces with the role's password from the pod's environment (never in a ConfigMap).
*/}}
{{- define "channels-fleet.redis.aclUsers" -}}
{{- $f := .Values.config.keyPrefix -}}
{{- $l := .Values.redis.acl.layerPrefix -}}
user fleet-interface reset on >interface-password ~{{ $f }}:q:{fleet.*} ~{{ $f }}:hb:{hb}:* ~{{ $f }}:dead:{hb}:* %R~{{ $f }}:workers:{hb} %R~{{ $f }}:session:* ~{{ $l }}:q:{specific.fleet*} ~{{ $l }}:g:* resetchannels -@all +hello +ping +evalsha +script|load +llen +lindex +lpop +rpush +pexpire +blmpop +zrem +eval +exists +set +del +mget +zrangebyscore +cluster|slots +cluster|nodes +cluster|info +command +asking
user fleet-worker reset on >worker-password ~{{ $f }}:q:{fleet.*} ~{{ $f }}:hb:{hb}:* ~{{ $f }}:dead:{hb}:* ~{{ $f }}:workers:{hb} ~{{ $f }}:session:* ~{{ $l }}:* ~{{ $f }}:home:* ~{{ $f }}:adopt:* resetchannels -@all +hello +ping +evalsha +script|load +llen +lindex +lpop +rpush +lpush +pexpire +blmpop +zadd +expire +zremrangebyscore +zrange +zrem +eval +exists +set +del +mget +get +hset +hdel +hgetall +hlen +cluster|slots +cluster|nodes +cluster|info +command +asking
user fleet-web reset on >web-password ~{{ $l }}:* resetchannels -@all +hello +evalsha +script|load +llen +lindex +lpop +rpush +pexpire +zremrangebyscore +zrange +cluster|slots +asking
user fleet-exporter reset on >exporter-password %R~{{ $f }}:q:{fleet.connect} %R~{{ $f }}:hb:{hb}:* resetchannels -@all +hello +ping +llen +lindex +mget +scan +cluster|slots +cluster|nodes +cluster|getkeysinslot +command
{{- end -}}

{{/* The roles' user names (docs/redis-acl.md). */}}
{{- define "channels-fleet.redis.aclUser" -}}
fleet-{{ . }}
{{- end -}}

{{/* The Secret of the users' passwords: redis.acl.existingSecret, or the one the chart keeps. */}}
{{- define "channels-fleet.redis.aclSecretName" -}}
{{- .Values.redis.acl.existingSecret | default (include "channels-fleet.componentName" (dict "context" . "component" "redis-users")) -}}
{{- end -}}

{{/* Whether the app pods connect as role users: the built-in cluster with redis.acl.enabled. */}}
{{- define "channels-fleet.redis.aclOn" -}}
{{- if and (include "channels-fleet.redis.builtin" .) .Values.redis.acl.enabled -}}true{{- end -}}
{{- end -}}

{{/*
A role's Redis environment with redis.acl.enabled: its user and password (CHANNELS_FLEET_REDIS_
USERNAME / _PASSWORD, which override a URL's user info), and the URL with both, for clients that
read only the URL (the project's CHANNEL_LAYERS). Call with (dict "context" $ "role" ROLE).
*/}}
{{- define "channels-fleet.redis.roleEnv" -}}
{{- if not (has .role (list "interface" "worker" "web" "exporter")) -}}
{{- fail (printf "channels-fleet.redis.roleEnv: no Redis role %q (interface, worker, web, exporter)" .role) -}}
{{- end }}
- name: CHANNELS_FLEET_REDIS_USERNAME
  value: {{ include "channels-fleet.redis.aclUser" .role }}
- name: CHANNELS_FLEET_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "channels-fleet.redis.aclSecretName" .context }}
      key: {{ .role }}-password
- name: CHANNELS_FLEET_REDIS_URL
  value: "{{ include "channels-fleet.redis.scheme" .context }}://$(CHANNELS_FLEET_REDIS_USERNAME):$(CHANNELS_FLEET_REDIS_PASSWORD)@{{ include "channels-fleet.redis.fullname" .context }}:6379{{ include "channels-fleet.redis.urlQuery" .context }}"
{{- end -}}
