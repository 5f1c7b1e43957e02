{{/*
The built-in cluster's shard layout and TLS cannot change on an installed release: the chart
does not reshard, and plain and TLS nodes do not hear each other while they roll. `helm upgrade`
sees the installed ones (lookup: shard 0's StatefulSet) and refuses others; where lookup sees
nothing (helm template, Argo CD) the pods refuse another layout at start
(files/redis/node.sh, refuse_other_layout).
*/}}
{{- define "channels-fleet.redis.layoutCheck" -}}
{{- $rc := .Values.redis.cluster -}}
{{- $sts := lookup "apps/v1" "StatefulSet" .Release.Namespace (include "channels-fleet.redis.shardName" (dict "context" . "shard" 0)) -}}
{{- if $sts -}}
{{- $installed := dict -}}
{{- range $c := $sts.spec.template.spec.containers -}}
{{- if eq $c.name "valkey" -}}
{{- range $e := $c.env -}}
{{- if has $e.name (list "MASTERS" "REPLICAS_PER_MASTER" "TLS_DIR") -}}
{{- $_ := set $installed $e.name (toString $e.value) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (hasKey $installed "MASTERS") (hasKey $installed "REPLICAS_PER_MASTER") -}}
{{- if or (ne $installed.MASTERS (toString $rc.masters)) (ne $installed.REPLICAS_PER_MASTER (toString $rc.replicasPerMaster)) -}}
{{- fail (printf "\n\nredis.cluster: the installed cluster has %s masters x %s replicas each, these values say %v x %v; the chart cannot reshard a running cluster: set redis.cluster.masters=%s and redis.cluster.replicasPerMaster=%s back, or install a new release beside this one and move to it" $installed.MASTERS $installed.REPLICAS_PER_MASTER $rc.masters $rc.replicasPerMaster $installed.MASTERS $installed.REPLICAS_PER_MASTER) -}}
{{- end -}}
{{- $tlsNow := hasKey $installed "TLS_DIR" -}}
{{- $tlsWanted := not (not (include "channels-fleet.redis.tlsOn" .)) -}}
{{- if ne $tlsNow $tlsWanted -}}
{{- fail (printf "\n\nredis.tls.enabled: the installed cluster runs %s TLS, these values say %v; a running cluster cannot switch (plain and TLS nodes do not hear each other while they roll): set redis.tls.enabled=%v back, or install a new release beside this one and move to it" (ternary "with" "without" $tlsNow) $tlsWanted $tlsNow) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
