{{/*
Names: chart name, full name (release-chart), cut to 63 characters (the DNS label limit).
*/}}
{{- define "channels-fleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "channels-fleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's resources: fullname-component, the component suffix always kept. */}}
{{- define "channels-fleet.componentName" -}}
{{- $full := include "channels-fleet.fullname" .context -}}
{{- printf "%s-%s" ($full | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component -}}
{{- end -}}

{{- define "channels-fleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: only name and instance (plus the component), which never change. */}}
{{- define "channels-fleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "channels-fleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "channels-fleet.labels" -}}
helm.sh/chart: {{ include "channels-fleet.chart" . }}
{{ include "channels-fleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: channels-fleet
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Component labels; call with (dict "context" $ "component" "interface"). */}}
{{- define "channels-fleet.componentLabels" -}}
{{ include "channels-fleet.labels" .context }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "channels-fleet.componentSelectorLabels" -}}
{{ include "channels-fleet.selectorLabels" .context }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "channels-fleet.annotations" -}}
{{- with .Values.commonAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "channels-fleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "channels-fleet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference from {registry, repository, tag, digest}; call with (dict "image" .Values.x "context" $). */}}
{{- define "channels-fleet.image" -}}
{{- $repo := .image.repository -}}
{{- if .image.registry -}}{{- $repo = printf "%s/%s" .image.registry .image.repository -}}{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .context.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The bundled Redis Cluster's names, as the bitnami chart computes them. */}}
{{- define "channels-fleet.redisCluster.fullname" -}}
{{- $rc := index .Values "redis-cluster" | default dict -}}
{{- if $rc.fullnameOverride -}}
{{- $rc.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default "redis-cluster" $rc.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "channels-fleet.redisCluster.usePassword" -}}
{{- $rc := index .Values "redis-cluster" | default dict -}}
{{- if eq (toString (dig "usePassword" true $rc)) "false" -}}{{- else -}}true{{- end -}}
{{- end -}}

{{- define "channels-fleet.redisCluster.secretName" -}}
{{- $rc := index .Values "redis-cluster" | default dict -}}
{{- default (include "channels-fleet.redisCluster.fullname" .) $rc.existingSecret -}}
{{- end -}}

{{- define "channels-fleet.redisCluster.secretKey" -}}
{{- $rc := index .Values "redis-cluster" | default dict -}}
{{- if and $rc.existingSecret $rc.existingSecretPasswordKey -}}{{- $rc.existingSecretPasswordKey -}}{{- else -}}redis-password{{- end -}}
{{- end -}}

{{/* The Secret holding CHANNELS_FLEET_REDIS_URL (existing, or the one this chart renders). */}}
{{- define "channels-fleet.redisSecretName" -}}
{{- if .Values.redis.existingSecret -}}
{{- .Values.redis.existingSecret -}}
{{- else -}}
{{- include "channels-fleet.componentName" (dict "context" . "component" "redis") -}}
{{- end -}}
{{- end -}}

{{/* Environment every container gets: the Redis URL and the shared runtime settings. */}}
{{- define "channels-fleet.commonEnv" -}}
{{- if .Values.redisCluster.enabled }}
{{- if eq (include "channels-fleet.redisCluster.usePassword" .) "true" }}
- name: CHANNELS_FLEET_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "channels-fleet.redisCluster.secretName" . }}
      key: {{ include "channels-fleet.redisCluster.secretKey" . }}
- name: CHANNELS_FLEET_REDIS_URL
  value: "redis://:$(CHANNELS_FLEET_REDIS_PASSWORD)@{{ include "channels-fleet.redisCluster.fullname" . }}:6379"
{{- else }}
- name: CHANNELS_FLEET_REDIS_URL
  value: "redis://{{ include "channels-fleet.redisCluster.fullname" . }}:6379"
{{- end }}
{{- else }}
- name: CHANNELS_FLEET_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "channels-fleet.redisSecretName" . }}
      key: {{ ternary .Values.redis.existingSecretKey "redis-url" (not (empty .Values.redis.existingSecret)) }}
{{- end }}
- name: CHANNELS_FLEET_METRICS_PORT
  value: {{ .Values.ports.metrics | quote }}
- name: CHANNELS_FLEET_DRAIN_TIMEOUT
  value: {{ .Values.config.drainTimeout | quote }}
- name: CHANNELS_FLEET_KEY_PREFIX
  value: {{ .Values.config.keyPrefix | quote }}
{{- with .Values.config.allowedOrigins }}
- name: CHANNELS_FLEET_ALLOWED_ORIGINS
  value: {{ . | quote }}
{{- end }}
{{- with .Values.config.forwardedAllowIps }}
- name: CHANNELS_FLEET_FORWARDED_ALLOW_IPS
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Environment of the project containers (worker, web). */}}
{{- define "channels-fleet.projectEnv" -}}
- name: DJANGO_SETTINGS_MODULE
  value: {{ .Values.project.settingsModule | quote }}
{{- if .Values.project.databaseUrl }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "channels-fleet.componentName" (dict "context" . "component" "project") }}
      key: database-url
{{- end }}
{{- end -}}

{{- define "channels-fleet.envFrom" -}}
{{- $from := list -}}
{{- if and .project .context.Values.project.existingSecret -}}
{{- $from = append $from (dict "secretRef" (dict "name" .context.Values.project.existingSecret)) -}}
{{- end -}}
{{- $from = concat $from .context.Values.config.extraEnvFrom -}}
{{- with $from }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Probes on the metrics port. */}}
{{- define "channels-fleet.probes" -}}
{{- $p := .Values.probes -}}
{{- if $p.startup.enabled }}
startupProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: {{ $p.startup.periodSeconds }}
  timeoutSeconds: {{ $p.startup.timeoutSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
{{- end }}
{{- if $p.liveness.enabled }}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
{{- end }}
{{- if $p.readiness.enabled }}
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- end }}
{{- end -}}

{{/*
preStop: sleep while the Endpoints controller and the ingress drop the pod, then the kubelet sends
SIGTERM and the process drains. The image's own `sleep` keeps this independent of a shell.
*/}}
{{- define "channels-fleet.lifecycle" -}}
lifecycle:
  preStop:
    exec:
      command: ["sleep", "{{ .Values.config.preStopSleep }}"]
{{- end -}}

{{- define "channels-fleet.terminationGracePeriodSeconds" -}}
{{- add .Values.config.preStopSleep .Values.config.drainTimeout .Values.config.terminationMargin -}}
{{- end -}}

{{/* Spread replicas over nodes unless the user gave constraints; call with (dict "context" $ "component" "x" "spec" .Values.x). */}}
{{- define "channels-fleet.topologySpread" -}}
{{- if .spec.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml .spec.topologySpreadConstraints | nindent 2 }}
{{- else }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "channels-fleet.componentSelectorLabels" (dict "context" .context "component" .component) | nindent 8 }}
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by the three Deployments. */}}
{{- define "channels-fleet.podCommon" -}}
{{- $v := .context.Values -}}
serviceAccountName: {{ include "channels-fleet.serviceAccountName" .context }}
automountServiceAccountToken: {{ $v.serviceAccount.automountServiceAccountToken }}
terminationGracePeriodSeconds: {{ include "channels-fleet.terminationGracePeriodSeconds" .context }}
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .spec.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .spec.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .spec.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .spec.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{ include "channels-fleet.topologySpread" . }}
{{- end -}}

{{/*
Whether the workers' replica count belongs to an autoscaler (then the Deployment omits it): the
HPA, or KEDA's ScaledObject where the keda.sh API exists (without it nothing scales, so the
Deployment keeps worker.replicaCount and NOTES.txt says why).
*/}}
{{- define "channels-fleet.worker.autoscaled" -}}
{{- $a := .Values.worker.autoscaling -}}
{{- if and $a.enabled (or (eq $a.mode "hpa") (include "channels-fleet.hasKeda" .)) -}}true{{- end -}}
{{- end -}}

{{- define "channels-fleet.hasKeda" -}}
{{- if .Capabilities.APIVersions.Has "keda.sh/v1alpha1/ScaledObject" -}}true{{- end -}}
{{- end -}}

{{/*
validateValues: every cross-value check in one place; one `fail` listing each value to set.
The schema (values.schema.json) already refuses wrong types, negative counts and unknown keys.
*/}}
{{- define "channels-fleet.validateValues" -}}
{{- $msgs := list -}}
{{- if not (or .Values.redisCluster.enabled .Values.redis.existingSecret .Values.redis.url) -}}
{{- $msgs = append $msgs "redis: set redis.url, redis.existingSecret or redisCluster.enabled=true (the channel layer's Redis)" -}}
{{- end -}}
{{- if not (or .Values.interface.enabled .Values.worker.enabled .Values.web.enabled) -}}
{{- $msgs = append $msgs "components: enable at least one of interface.enabled, worker.enabled, web.enabled" -}}
{{- end -}}
{{- range $c := list "interface" "worker" "web" -}}
{{- $a := (index $.Values $c).autoscaling -}}
{{- if and $a.enabled (gt (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- $msgs = append $msgs (printf "%s.autoscaling: set %s.autoscaling.minReplicas (%v) <= %s.autoscaling.maxReplicas (%v)" $c $c $a.minReplicas $c $a.maxReplicas) -}}
{{- end -}}
{{- end -}}
{{- $ia := .Values.interface.autoscaling -}}
{{- if and $ia.enabled (eq (int $ia.targetCPUUtilizationPercentage) 0) (eq (int $ia.targetConnectionsPerPod) 0) -}}
{{- $msgs = append $msgs "interface.autoscaling: set interface.autoscaling.targetCPUUtilizationPercentage or interface.autoscaling.targetConnectionsPerPod above 0" -}}
{{- end -}}
{{- $wa := .Values.worker.autoscaling -}}
{{- if and $wa.enabled (eq $wa.mode "keda") (not .Values.redisCluster.enabled) (not $wa.keda.addresses) -}}
{{- $msgs = append $msgs "worker.autoscaling.keda: set worker.autoscaling.keda.addresses (Redis Cluster host:port list KEDA reads the queue from)" -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.interface.enabled) (not .Values.web.enabled) -}}
{{- $msgs = append $msgs "ingress: set interface.enabled or web.enabled, or ingress.enabled=false (nothing to route to)" -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled (not .Values.networkPolicy.allowExternal) (not .Values.networkPolicy.ingressFrom) -}}
{{- $msgs = append $msgs "networkPolicy: set networkPolicy.ingressFrom (who may reach the public port) or networkPolicy.allowExternal=true" -}}
{{- end -}}
{{- if $msgs -}}
{{- fail (printf "\n\nVALUES VALIDATION:\n%s" (join "\n" $msgs)) -}}
{{- end -}}
{{- end -}}

{{/* KEDA's Redis password as `name:`/`key:` lines, or nothing when Redis has no password. */}}
{{- define "channels-fleet.kedaPasswordSecret" -}}
{{- $s := .Values.worker.autoscaling.keda.passwordSecret -}}
{{- if $s.name -}}
name: {{ $s.name }}
key: {{ $s.key }}
{{- else if and .Values.redisCluster.enabled (eq (include "channels-fleet.redisCluster.usePassword" .) "true") -}}
name: {{ include "channels-fleet.redisCluster.secretName" . }}
key: {{ include "channels-fleet.redisCluster.secretKey" . }}
{{- end -}}
{{- end -}}

{{/* The Redis LIST of the shared work queue (what KEDA reads with LLEN). */}}
{{- define "channels-fleet.workQueueKey" -}}
{{ .Values.config.keyPrefix }}:q:{fleet.connect}
{{- end -}}
