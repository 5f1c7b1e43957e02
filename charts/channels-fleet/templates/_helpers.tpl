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

{{/*
Name of one component's resources: fullname-component, the component suffix always kept, at most
.max characters (63, a DNS label). A StatefulSet's name goes into its pods' controller-revision-hash
label (name-hash, 63 at most), so the PostgreSQL name stops at 52 and the Redis name at 43 (its
StatefulSets add -shard-<n>).
*/}}
{{- define "channels-fleet.componentName" -}}
{{- $full := include "channels-fleet.fullname" .context -}}
{{- $max := .max | default 63 -}}
{{- printf "%s-%s" ($full | trunc (int (sub (sub $max 1) (len .component))) | trimSuffix "-") .component -}}
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

{{/*
An image reference registry/repository[:tag|@digest] from {registry, repository, tag, digest}; the
registry host is always there (the schema requires it). Call with (dict "image" .Values.x "context" $).
*/}}
{{- define "channels-fleet.image" -}}
{{- $repo := printf "%s/%s" .image.registry .image.repository -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .context.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* An image's `image:` and `imagePullPolicy:` lines; same arguments as channels-fleet.image. */}}
{{- define "channels-fleet.imageLines" -}}
image: {{ include "channels-fleet.image" . | quote }}
imagePullPolicy: {{ .image.pullPolicy }}
{{- end -}}

{{/* ---------------------------------------------------------------------------------------
Redis: the built-in cluster unless redis.external.* is set.
--------------------------------------------------------------------------------------- */}}
{{- define "channels-fleet.redis.builtin" -}}
{{- if not (or .Values.redis.external.url .Values.redis.external.existingSecret) -}}true{{- end -}}
{{- end -}}

{{- define "channels-fleet.redis.fullname" -}}
{{- include "channels-fleet.componentName" (dict "context" . "component" "redis" "max" 43) -}}
{{- end -}}

{{- define "channels-fleet.redis.headless" -}}
{{- include "channels-fleet.componentName" (dict "context" . "component" "redis-headless") -}}
{{- end -}}

{{/* One StatefulSet per shard: <redis>-shard-<n>, its pods <redis>-shard-<n>-<ordinal>. */}}
{{- define "channels-fleet.redis.shardName" -}}
{{- printf "%s-shard-%d" (include "channels-fleet.redis.fullname" .context) (int .shard) -}}
{{- end -}}

{{- define "channels-fleet.redis.shardLabel" -}}
channels-fleet.io/shard: {{ . | quote }}
{{- end -}}

{{- define "channels-fleet.redis.shardSelectorLabels" -}}
{{ include "channels-fleet.componentSelectorLabels" (dict "context" .context "component" "redis") }}
{{ include "channels-fleet.redis.shardLabel" .shard }}
{{- end -}}

{{/*
A shard's pods never share a node (hard: required; soft: preferred, for clusters with fewer
nodes than pods per shard): a lost node then takes at most one copy of any shard. The terms of
redis.affinity are kept beside it.
*/}}
{{- define "channels-fleet.redis.affinity" -}}
{{- $r := .context.Values.redis -}}
{{- $affinity := deepCopy ($r.affinity | default dict) -}}
{{- $anti := get $affinity "podAntiAffinity" | default dict -}}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (include "channels-fleet.redis.shardSelectorLabels" . | fromYaml)) -}}
{{- if eq $r.cluster.antiAffinity "hard" -}}
{{- $_ := set $anti "requiredDuringSchedulingIgnoredDuringExecution" (prepend (get $anti "requiredDuringSchedulingIgnoredDuringExecution" | default list) $term) -}}
{{- else -}}
{{- $_ := set $anti "preferredDuringSchedulingIgnoredDuringExecution" (prepend (get $anti "preferredDuringSchedulingIgnoredDuringExecution" | default list) (dict "weight" 100 "podAffinityTerm" $term)) -}}
{{- end -}}
{{- $_ := set $affinity "podAntiAffinity" $anti -}}
affinity:
  {{- toYaml $affinity | nindent 2 }}
{{- end -}}

{{/*
Redis spread (unless redis.topologySpreadConstraints is set): a shard's pods over zones, and all
Redis pods over nodes, so masters do not gather on one node. Best effort: a cluster without zone
labels schedules as before.
*/}}
{{- define "channels-fleet.redis.topologySpread" -}}
{{- $r := .context.Values.redis -}}
topologySpreadConstraints:
{{- if $r.topologySpreadConstraints }}
  {{- toYaml $r.topologySpreadConstraints | nindent 2 }}
{{- else }}
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "channels-fleet.redis.shardSelectorLabels" . | nindent 8 }}
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "channels-fleet.componentSelectorLabels" (dict "context" .context "component" "redis") | nindent 8 }}
{{- end }}
{{- end -}}


{{/* The Secret the chart renders for an external Redis: the URL(s) from redis.external.url. */}}
{{- define "channels-fleet.redis.secretName" -}}
{{- include "channels-fleet.redis.fullname" . -}}
{{- end -}}

{{/* The built-in cluster's password Secret when the user names none: made by the secrets Job. */}}
{{- define "channels-fleet.redis.authSecretName" -}}
{{- include "channels-fleet.componentName" (dict "context" . "component" "redis-auth") -}}
{{- end -}}

{{/* Secret and key of the built-in cluster's password. */}}
{{- define "channels-fleet.redis.passwordSecret" -}}
{{- if .Values.redis.auth.existingSecret -}}
name: {{ .Values.redis.auth.existingSecret }}
key: {{ .Values.redis.auth.existingSecretKey }}
{{- else -}}
name: {{ include "channels-fleet.redis.authSecretName" . }}
key: redis-password
{{- end -}}
{{- end -}}

{{/*
CHANNELS_FLEET_REDIS_URL. From a Secret: the URL(s) of an external Redis. The built-in cluster's URL
is put together by Kubernetes from the password variable ($(VAR) cannot escape: the password must
be URL-safe, as the generated one is: letters and digits).
Call with (dict "context" $ "role" "interface|worker|web"): with redis.acl.enabled each role
connects as its own user (channels-fleet.redis.roleEnv).
*/}}
{{- define "channels-fleet.redisEnv" -}}
{{- $role := .role -}}
{{- with .context -}}
{{- $r := .Values.redis -}}
{{- if include "channels-fleet.redis.aclOn" . }}
{{- include "channels-fleet.redis.roleEnv" (dict "context" . "role" $role) }}
{{- else if $r.external.existingSecret }}
- name: CHANNELS_FLEET_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $r.external.existingSecret }}
      key: {{ $r.external.existingSecretKey }}
{{- else if $r.external.url }}
- name: CHANNELS_FLEET_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "channels-fleet.redis.secretName" . }}
      key: redis-url
{{- else }}
- name: CHANNELS_FLEET_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      {{- include "channels-fleet.redis.passwordSecret" . | nindent 6 }}
- name: CHANNELS_FLEET_REDIS_URL
  value: "{{ include "channels-fleet.redis.scheme" . }}://:$(CHANNELS_FLEET_REDIS_PASSWORD)@{{ include "channels-fleet.redis.fullname" . }}:6379{{ include "channels-fleet.redis.urlQuery" . }}"
{{- end }}
{{- include "channels-fleet.redis.caEnv" . }}
{{- include "channels-fleet.redis.externalEnv" (dict "context" . "role" $role) }}
{{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------------------------------
Database: where DATABASE_URL comes from (first match wins): existing Secret, URL, bundled, none.
--------------------------------------------------------------------------------------- */}}
{{- define "channels-fleet.database.source" -}}
{{- $d := .Values.database -}}
{{- if $d.external.existingSecret -}}existingSecret
{{- else if $d.external.url -}}url
{{- else if $d.postgresql.enabled -}}postgresql
{{- end -}}
{{- end -}}

{{- define "channels-fleet.postgresql.fullname" -}}
{{- include "channels-fleet.componentName" (dict "context" . "component" "postgresql" "max" 52) -}}
{{- end -}}

{{/* The Secret the chart renders for an external database: the URL from database.external.url. */}}
{{- define "channels-fleet.database.secretName" -}}
{{- include "channels-fleet.componentName" (dict "context" . "component" "database") -}}
{{- end -}}

{{/* The bundled PostgreSQL's password Secret when the user names none: made by the secrets Job. */}}
{{- define "channels-fleet.postgresql.authSecretName" -}}
{{- include "channels-fleet.componentName" (dict "context" . "component" "postgresql-auth") -}}
{{- end -}}

{{- define "channels-fleet.postgresql.passwordSecret" -}}
{{- $a := .Values.database.postgresql.auth -}}
{{- if $a.existingSecret -}}
name: {{ $a.existingSecret }}
key: {{ $a.existingSecretKey }}
{{- else -}}
name: {{ include "channels-fleet.postgresql.authSecretName" . }}
key: postgres-password
{{- end -}}
{{- end -}}

{{- define "channels-fleet.databaseEnv" -}}
{{- $d := .Values.database -}}
{{- $source := include "channels-fleet.database.source" . -}}
{{- if eq $source "existingSecret" }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $d.external.existingSecret }}
      key: {{ $d.external.existingSecretKey }}
{{- else if eq $source "url" }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "channels-fleet.database.secretName" . }}
      key: database-url
{{- else if eq $source "postgresql" }}
- name: DATABASE_PASSWORD
  valueFrom:
    secretKeyRef:
      {{- include "channels-fleet.postgresql.passwordSecret" . | nindent 6 }}
- name: DATABASE_URL
  value: "postgres://{{ $d.postgresql.username }}:$(DATABASE_PASSWORD)@{{ include "channels-fleet.postgresql.fullname" . }}:5432/{{ $d.postgresql.database }}"
{{- end }}
{{- end -}}

{{/* ------------------------------------------------------------------------------------- */}}

{{/* Environment every fleet container gets: the Redis URL and the shared runtime settings.
Call with (dict "context" $ "role" "interface|worker|web"). */}}
{{- define "channels-fleet.commonEnv" -}}
{{ include "channels-fleet.redisEnv" . }}
{{- with .context }}
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
{{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------------------------------
Resumable sessions: the interfaces' token key (CHANNELS_FLEET_RESUME_KEY), from the user's Secret
or the one the secrets Job makes. Workers and web never get it: only interfaces issue and check
tokens.
--------------------------------------------------------------------------------------- */}}
{{- define "channels-fleet.resume.secretName" -}}
{{- include "channels-fleet.componentName" (dict "context" . "component" "resume-key") -}}
{{- end -}}

{{/* Non-empty when the secrets Job makes the key: resume on, interfaces deployed, no Secret named. */}}
{{- define "channels-fleet.resume.generated" -}}
{{- if and .Values.resume.enabled .Values.interface.enabled (not .Values.resume.existingSecret) -}}true{{- end -}}
{{- end -}}

{{- define "channels-fleet.resumeEnv" -}}
{{- $r := .Values.resume -}}
{{- if $r.enabled -}}
- name: CHANNELS_FLEET_RESUME_KEY
  valueFrom:
    secretKeyRef:
      {{- if $r.existingSecret }}
      name: {{ $r.existingSecret }}
      key: {{ $r.existingSecretKey }}
      {{- else }}
      name: {{ include "channels-fleet.resume.secretName" . }}
      key: resume-key
      {{- end }}
{{- end }}
{{- end -}}

{{/* Environment of the project containers (worker, web, migrate). */}}
{{- define "channels-fleet.projectEnv" -}}
- name: DJANGO_SETTINGS_MODULE
  value: {{ .Values.project.settingsModule | quote }}
{{- include "channels-fleet.databaseEnv" . }}
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

{{/*
checksum/* annotations: a changed Secret or ConfigMap the pods read rolls them. Each names a
template of this chart, whose content comes from values only; one that renders nothing (an
existing or a generated Secret is used) adds nothing.
Call with (dict "context" $ "files" (list "redis-secret.yaml" ...)).
*/}}
{{- define "channels-fleet.checksums" -}}
{{- range .files }}
{{- $body := include (print $.context.Template.BasePath "/" .) $.context }}
{{- if trim $body }}
checksum/{{ trimSuffix ".yaml" . }}: {{ $body | sha256sum }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
A pod template's `annotations:` block: checksum/* of the given templates plus the user's, or nothing.
Call with (dict "context" $ "files" (list ...) "extra" .Values.x.podAnnotations).
*/}}
{{- define "channels-fleet.podAnnotations" -}}
{{- $checksums := trim (include "channels-fleet.checksums" .) -}}
{{- if or $checksums .extra }}
annotations:
  {{- with $checksums }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with .extra }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
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

{{/*
terminationGracePeriodSeconds = preStop pause + drain + margin: SIGKILL never cuts a drain short.
Call with (dict "context" $ "preStop" true|false).
*/}}
{{- define "channels-fleet.terminationGracePeriodSeconds" -}}
{{- $c := .context.Values.config -}}
{{- add (ternary $c.preStopSleep 0 .preStop) $c.drainTimeout $c.terminationMargin -}}
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

{{/* Scheduling settings of a pod: priority class, node selector, tolerations, affinity. */}}
{{- define "channels-fleet.scheduling" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by the fleet's pods; call with (dict "context" $ "component" "x" "spec" .Values.x "preStop" bool). */}}
{{- define "channels-fleet.podCommon" -}}
{{- $v := .context.Values -}}
serviceAccountName: {{ include "channels-fleet.serviceAccountName" .context }}
automountServiceAccountToken: {{ $v.serviceAccount.automountServiceAccountToken }}
terminationGracePeriodSeconds: {{ include "channels-fleet.terminationGracePeriodSeconds" . }}
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- include "channels-fleet.scheduling" .spec }}
{{ include "channels-fleet.topologySpread" . }}
{{- end -}}

{{/*
Init containers: list items (each Deployment writes `initContainers:` and includes them).

Interface and worker start once the channel layer's Redis answers and, for a Redis Cluster, the
cluster has formed: every node it knows says cluster_state:ok with every slot assigned
(channels_fleet/redis_wait.py). Without it they exit 3 ("Redis at ...: Connection refused")
and restart until the bundled cluster forms on a fresh install. Call with
(dict "context" $ "image" <image values> "spec" <component values> "project" <bool> "role" <Redis role>).
*/}}
{{- define "channels-fleet.waitForRedis" -}}
{{- $ := .context -}}
- name: wait-for-redis
  {{- include "channels-fleet.imageLines" (dict "image" .image "context" $) | nindent 2 }}
  command: ["python3", "-m", "channels_fleet.redis_wait"]
  env:
    {{- include "channels-fleet.redisEnv" (dict "context" $ "role" .role) | trim | nindent 4 }}
    {{- with $.Values.config.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- include "channels-fleet.envFrom" (dict "context" $ "project" .project) | nindent 2 }}
  securityContext:
    {{- toYaml $.Values.containerSecurityContext | nindent 4 }}
  resources:
    {{- toYaml .spec.resources | nindent 4 }}
  {{- with include "channels-fleet.extraVolumeMounts" (dict "context" $ "redis" true "extra" .spec.extraVolumeMounts) }}
  volumeMounts:
    {{- . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------------------------------
Generated secrets: no value is made at render time (two renders with the same values are
identical, as Argo CD and `helm template | kubectl apply` need). Each item is made ONCE in the
cluster by the secrets Job (`channels-fleet secrets ensure`, src/channels_fleet/kube): created when
absent, never changed after. A YAML list of {secret, key, kind[, options]} (kinds:
channels_fleet.kube.kinds); add an item in a block of its own. Empty: no Job, no RBAC.
--------------------------------------------------------------------------------------- */}}
{{- define "channels-fleet.generatedSecrets" -}}
{{- $items := list -}}
{{- if and (include "channels-fleet.redis.builtin" .) (not .Values.redis.auth.existingSecret) -}}
{{- $items = append $items (dict "secret" (include "channels-fleet.redis.authSecretName" .) "key" "redis-password" "kind" "password") -}}
{{- end -}}
{{- if and (eq (include "channels-fleet.database.source" .) "postgresql") (not .Values.database.postgresql.auth.existingSecret) -}}
{{- $items = append $items (dict "secret" (include "channels-fleet.postgresql.authSecretName" .) "key" "postgres-password" "kind" "password") -}}
{{- end -}}
{{- if and (include "channels-fleet.redis.aclOn" .) (not .Values.redis.acl.existingSecret) -}}
{{- range $role := list "interface" "worker" "web" "exporter" -}}
{{- $items = append $items (dict "secret" (include "channels-fleet.redis.aclSecretName" $) "key" (printf "%s-password" $role) "kind" "password") -}}
{{- end -}}
{{- end -}}
{{- if and (include "channels-fleet.redis.tlsOn" .) (not .Values.redis.tls.existingSecret) -}}
{{- $items = append $items (include "channels-fleet.redis.tlsSecretItem" . | fromYaml) -}}
{{- end -}}
{{- if include "channels-fleet.resume.generated" . -}}
{{- $items = append $items (dict "secret" (include "channels-fleet.resume.secretName" .) "key" "resume-key" "kind" "password" "options" (dict "length" 48)) -}}
{{- end -}}
{{- toYaml $items -}}
{{- end -}}

{{- define "channels-fleet.secrets.fullname" -}}
{{- include "channels-fleet.componentName" (dict "context" . "component" "secrets") -}}
{{- end -}}

{{/*
Hook annotations of the secrets Job and its RBAC: Helm runs them before installing or upgrading
the rest (RBAC first: lower weight) and deletes them once done. `kubectl apply` and Argo CD
(which maps them to PreSync hooks) apply the same objects. Call with (dict "context" $ "weight" N).
*/}}
{{- define "channels-fleet.secrets.annotations" -}}
annotations:
  helm.sh/hook: pre-install,pre-upgrade
  helm.sh/hook-weight: {{ .weight | quote }}
  helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
  {{- with .context.Values.commonAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/*
A Job named by what it runs: its name ends in a hash of its rendered spec (image, command,
environment, resources), so a changed Job is a new Job (a Job's pod template cannot change) and an
unchanged one is not run again. Call with (dict "context" $ "component" "migrate" "spec" $spec).
*/}}
{{- define "channels-fleet.jobName" -}}
{{- include "channels-fleet.componentName" (dict "context" .context "component" (printf "%s-%s" .component (.spec | sha256sum | trunc 10))) -}}
{{- end -}}

{{/*
Worker and web start once the migrate Job has applied the project's migrations: this init container
repeats database.migrate.checkCommand (`manage.py migrate --check`) until it succeeds.
Call with (dict "context" $ "spec" <component values>): it mounts the component's extraVolumeMounts.
*/}}
{{- define "channels-fleet.waitForMigrations" -}}
{{- $spec := .spec -}}
{{- $ := .context -}}
{{- with $ -}}
{{- $m := .Values.database.migrate -}}
{{- if $m.enabled }}
- name: wait-for-migrations
  {{- include "channels-fleet.imageLines" (dict "image" .Values.projectImage "context" $) | nindent 2 }}
  command:
    - sh
    - -c
    - |
      n=0
      until "$@" >/tmp/check.log 2>&1; do
        n=$((n + 1))
        [ $((n % 10)) = 1 ] && echo "waiting for the migrate Job: $* failed: $(tail -n 1 /tmp/check.log)"
        sleep 5
      done
      echo "migrations applied"
    - wait-for-migrations
    {{- toYaml $m.checkCommand | nindent 4 }}
  env:
    {{- include "channels-fleet.projectEnv" . | nindent 4 }}
    {{- with .Values.config.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- include "channels-fleet.envFrom" (dict "context" $ "project" true) | nindent 2 }}
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
  resources:
    {{- toYaml $m.resources | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    {{- include "channels-fleet.extraVolumeMounts" (dict "context" $ "extra" $spec.extraVolumeMounts) | nindent 4 }}
{{- end }}
{{- end }}
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
{{- if and $wa.enabled (eq $wa.mode "keda") (not $wa.keda.serverAddress) -}}
{{- $msgs = append $msgs "worker.autoscaling.keda: set worker.autoscaling.keda.serverAddress (the URL of the Prometheus that records channels_fleet:worker_saturation:ratio)" -}}
{{- end -}}
{{- if and (or .Values.ingress.enabled .Values.httpRoute.enabled) (not .Values.interface.enabled) (not .Values.web.enabled) -}}
{{- $msgs = append $msgs "routes: set interface.enabled or web.enabled, or ingress.enabled=false and httpRoute.enabled=false (nothing to route to)" -}}
{{- end -}}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) -}}
{{- $msgs = append $msgs "httpRoute: set httpRoute.parentRefs (the Gateway the route attaches to, e.g. [{name: my-gateway, namespace: gateway-system}])" -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled (not .Values.networkPolicy.allowExternal) (not .Values.networkPolicy.ingressFrom) -}}
{{- $msgs = append $msgs "networkPolicy: set networkPolicy.ingressFrom (who may reach the public port) or networkPolicy.allowExternal=true" -}}
{{- end -}}
{{- $rc := .Values.redis.cluster -}}
{{- if and (include "channels-fleet.redis.builtin" .) (gt (int $rc.replicasPerMaster) 0) (lt (int $rc.masters) 3) -}}
{{- $msgs = append $msgs (printf "redis.cluster: replicas take over only when a majority of the masters vote, which needs 3 masters or more; set redis.cluster.masters >= 3, or redis.cluster.replicasPerMaster=0 for a small install (got %v masters)" $rc.masters) -}}
{{- end -}}
{{- $msgs = concat $msgs (include "channels-fleet.redis.externalRefusals" . | fromYamlArray) -}}
{{- if $msgs -}}
{{- fail (printf "\n\nVALUES VALIDATION:\n%s" (join "\n" $msgs)) -}}
{{- end -}}
{{- end -}}

{{/* The migrate Job's name: by what it runs (its spec's hash; migrate-job.yaml). */}}
{{- define "channels-fleet.migrate.name" -}}
{{- include "channels-fleet.jobName" (dict "context" . "component" "migrate" "spec" (include "channels-fleet.migrate.jobSpec" .)) -}}
{{- end -}}
