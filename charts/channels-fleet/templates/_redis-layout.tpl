{{/*
The built-in cluster's shard layout cannot change on an installed release: the chart does not
reshard. `helm upgrade` sees the installed layout (lookup: shard 0's StatefulSet) and refuses
another; where lookup sees nothing (helm template, Argo CD) the pods refuse it at start
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
{{- if has $e.name (list "MASTERS" "REPLICAS_PER_MASTER") -}}
{{- $_ := set $installed $e.name (toString $e.value) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (hasKey $installed "MASTERS") (hasKey $installed "REPLICAS_PER_MASTER") -}}
{{- if or (ne $installed.MASTERS (toString $rc.masters)) (ne $installed.REPLICAS_PER_MASTER (toString $rc.replicasPerMaster)) -}}
{{- fail (printf "\n\nredis.cluster: the installed cluster has %s masters x %s replicas each, these values say %v x %v; the chart cannot reshard a running cluster: set redis.cluster.masters=%s and redis.cluster.replicasPerMaster=%s back, or install a new release beside this one and move to it" $installed.MASTERS $installed.REPLICAS_PER_MASTER $rc.masters $rc.replicasPerMaster $installed.MASTERS $installed.REPLICAS_PER_MASTER) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
