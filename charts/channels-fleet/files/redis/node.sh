#!/bin/sh
# One node of the chart's Redis Cluster: `node.sh start | ready | alive | prestop`.
#
# Runs with the official Valkey image (valkey-server/valkey-cli 8.x) and with the local stand-in
# (Debian's valkey-server 8.1); it keeps to commands Redis 7.0 has too, for redis.image.* set to
# a Redis image. POSIX sh, getent, awk, timeout.
#
# start    writes the configuration (the password never on a command line), starts valkey-server
#          and runs the keeper beside it until the server exits. The keeper makes the node a
#          member and keeps it one:
#            - each shard is a StatefulSet (<prefix><shard>-<ordinal>); pod 0 of shard 0 creates
#              the cluster once every shard's pod 0 answers and none is in a cluster yet:
#              distinct config epochs, a slot range per shard, MEET; the other pods join as they
#              come (a shard's replicas need nodes of their own: one that stays Pending delays
#              nothing) and replicate their own shard's master, never another's
#              (cluster-allow-replica-migration no), so a shard's copies stay on its nodes;
#            - a node that starts empty (a new pod, or one rescheduled without its data dir)
#              while a cluster runs MEETs it and takes the place of its old self, found by the
#              hostname every node announces (cluster-announce-hostname = the pod's stable DNS
#              name): a replica of its shard's master, or, when its old self was a master
#              whose slots no replica took over, those slots (empty: the data went with the pod);
#            - a node whose peers moved (new pod IPs) MEETs them at the address their hostname
#              resolves to now, which Redis matches to the known node ID;
#            - every node forgets failed, slot-less nodes whose hostname a live node now has;
#            - a replica whose master stays failed, or unreachable, with no election (no
#              majority left to vote) takes over after 3 x cluster-node-timeout.
#          Before the server starts, a node that finds a formed cluster of another shard layout
#          (redis.cluster.masters / replicasPerMaster changed on an installed release; the
#          layout is recorded in the cluster, key channels-fleet:cluster-layout) refuses to
#          start, with one line naming both: the chart does not reshard, and joining would leave
#          new shards without slots and every rolled pod in a cluster its settings do not describe.
#          Before the server starts, a node back with its nodes.conf but without its data (a
#          container restart keeps the emptyDir; a claim keeps nodes.conf, and data only when
#          extraConfig turns on RDB/AOF) that was a master with slots has a replica take them
#          over first (CLUSTER FAILOVER FORCE): back as their master, empty, it would have its
#          replicas copy the emptiness.
# ready    readiness: this node serves its own slots (a master with slots, or a replica whose
#          link to its master is up) on the majority's side. With cluster-require-full-coverage
#          no, cluster_state is fail only on a minority's side: a shard that is out (its master
#          lost, no replica) leaves the other shards serving and their pods ready.
# alive    liveness: the server answers.
# prestop  a master with slots asks one of its replicas to take over (CLUSTER FAILOVER) and waits
#          until it did, so a rolling restart or a drain loses no writes and stalls nothing.
#
# Environment (set by the StatefulSet): POD_NAME, POD_IP, SHARD, SHARD_PREFIX (pods are
# <SHARD_PREFIX><shard>-<ordinal>), PEER_DOMAIN (the headless Service's domain), MASTERS,
# REPLICAS_PER_MASTER, NODE_TIMEOUT (ms), REDIS_PASSWORD (the default user's),
# MAXMEMORY; optional REDIS_PORT (6379), DATA_DIR (/data), RUN_DIR (/tmp: the configuration and
# the keeper's marks), LOCAL_ADDR (127.0.0.1: this node's own server), EXTRA_CONFIG (a file to
# include), ACL_FILE and ACL_<ROLE>_PASSWORD (the role users: write_acl), TLS_DIR (ca.crt,
# tls.crt, tls.key: TLS only).
set -eu

PORT=${REDIS_PORT:-6379}
DATA_DIR=${DATA_DIR:-/data}
RUN_DIR=${RUN_DIR:-/tmp}
LOCAL=${LOCAL_ADDR:-127.0.0.1}  # where this node's own server answers
CONF=$RUN_DIR/valkey.conf
TLS_ARGS=""
[ -z "${TLS_DIR:-}" ] || TLS_ARGS="--tls --cacert $TLS_DIR/ca.crt"
SLOTS=16384
INTERVAL=${KEEPER_INTERVAL:-2}
LAYOUT_KEY=channels-fleet:cluster-layout
LAYOUT="${MASTERS}x${REPLICAS_PER_MASTER}"  # masters x replicas of each

log() { echo "node.sh: $*" >&2; }

cli() {  # cli HOST ARGS...: one command, at most 5 s, raw output without carriage returns
  _host=$1
  shift
  # shellcheck disable=SC2086  # TLS_ARGS: one word per option
  timeout 5 valkey-cli --no-auth-warning -a "$REDIS_PASSWORD" $TLS_ARGS -h "$_host" -p "$PORT" \
    "$@" 2>/dev/null | tr -d '\r'
}

resolve() {  # resolve HOST: its first address, or nothing
  getent hosts "$1" 2>/dev/null | awk '{ print $1; exit }'
}

info_field() {  # info_field TEXT NAME: the value of NAME:value in INFO / CLUSTER INFO output
  printf '%s\n' "$1" | awk -F: -v k="$2" '$1 == k { print $2; exit }'
}

host_of() {  # host_of SHARD ORDINAL: the pod's stable DNS name
  echo "$SHARD_PREFIX$1-$2.$PEER_DOMAIN"
}

my_host() { echo "$POD_NAME.$PEER_DOMAIN"; }

# each_pod CALLBACK: `CALLBACK HOST IP` for every configured pod in turn (shard 0's ordinals
# 0..REPLICAS_PER_MASTER, then shard 1's, ...), IP being the address HOST resolves to now (empty
# for this pod, and for a host that does not resolve), until CALLBACK succeeds. Succeeds then;
# fails when no pod made CALLBACK succeed. Sets shard, ord, host and ip.
each_pod() {
  _self=$(my_host)
  shard=0
  while [ "$shard" -lt "$MASTERS" ]; do
    ord=0
    while [ "$ord" -le "$REPLICAS_PER_MASTER" ]; do
      host=$(host_of "$shard" "$ord")
      ip=""
      [ "$host" = "$_self" ] || ip=$(resolve "$host")
      "$1" "$host" "$ip" && return 0
      ord=$((ord + 1))
    done
    shard=$((shard + 1))
  done
  return 1
}

# ---- CLUSTER NODES, parsed with awk --------------------------------------------------------
# Fields: id addr(ip:port@bus[,hostname[,aux]]) flags master ping pong epoch link slot...
NODES_AWK='
function host(a,   p) { p = index(a, ","); if (!p) return ""; a = substr(a, p + 1);
                        p = index(a, ","); return p ? substr(a, 1, p - 1) : a }
function ip(a) { return substr(a, 1, index(a, ":") - 1) }
function slots(   n, i) { n = 0; for (i = 9; i <= NF; i++) if ($i !~ /^\[/) n++; return n }
function failed() { return $3 ~ /(^|,)fail(,|$)/ }
function master() { return $3 ~ /master/ }
'

nodes_query() {  # nodes_query NODES AWK-BODY: run a query over the parsed table
  printf '%s\n' "$1" | awk "$NODES_AWK $2"
}

# ---- start ---------------------------------------------------------------------------------
url_safe() {  # url_safe WHAT VALUE: refuse a password a redis:// URL ($(VAR) in the pods) must escape
  case "$2" in
    "" | *[!A-Za-z0-9._~-]*)
      log "the $1 is empty or has characters a redis:// URL must escape; use letters, digits and -._~"
      exit 1 ;;
  esac
}

# With ACL_FILE (redis.acl.enabled): the role users of the chart's ACL file, each `>ROLE-password`
# replaced by its password from ACL_<ROLE>_PASSWORD, and the default user (the nodes' own
# replication and cluster traffic, the probes) with REDIS_PASSWORD. An ACL file replaces
# requirepass: without a default user line it would come back without a password.
write_acl() {
  acl=$RUN_DIR/users.acl
  echo "user default on >$REDIS_PASSWORD ~* &* +@all" >"$acl"
  users=$(cat "$ACL_FILE")
  for role in interface worker web exporter; do
    eval "pw=\${ACL_$(echo "$role" | tr a-z A-Z)_PASSWORD:-}"
    url_safe "password of the $role user (ACL_$(echo "$role" | tr a-z A-Z)_PASSWORD)" "$pw"
    users=$(printf '%s\n' "$users" | sed "s/ >$role-password / >$pw /")
  done
  printf '%s\n' "$users" >>"$acl"
  echo "aclfile $acl"
}

write_config() {
  url_safe "Redis password" "$REDIS_PASSWORD"
  umask 077
  if [ -n "${ACL_FILE:-}" ]; then
    auth=$(write_acl)
  else
    auth="requirepass $REDIS_PASSWORD"
  fi
  cat >"$CONF" <<EOF
port $PORT
dir $DATA_DIR
cluster-enabled yes
cluster-config-file $DATA_DIR/nodes.conf
cluster-node-timeout $NODE_TIMEOUT
cluster-announce-hostname $(my_host)
cluster-preferred-endpoint-type ip
cluster-replica-validity-factor 0
cluster-require-full-coverage no
cluster-allow-replica-migration no
$auth
masterauth $REDIS_PASSWORD
maxmemory ${MAXMEMORY:-0}
maxmemory-policy noeviction
save ""
appendonly no
EOF
  # TLS only (redis.tls.enabled): no plain port; clients, the cluster bus and replication over
  # TLS with the CA's certificate. Clients are told the nodes' DNS names, which the certificate
  # covers (their addresses it cannot), and show no client certificate (they have passwords).
  if [ -n "${TLS_DIR:-}" ]; then
    cat >>"$CONF" <<EOF
port 0
tls-port $PORT
tls-cert-file $TLS_DIR/tls.crt
tls-key-file $TLS_DIR/tls.key
tls-ca-cert-file $TLS_DIR/ca.crt
tls-cluster yes
tls-replication yes
tls-auth-clients no
cluster-preferred-endpoint-type hostname
EOF
  fi
  if [ -n "${EXTRA_CONFIG:-}" ] && [ -s "$EXTRA_CONFIG" ]; then
    echo "include $EXTRA_CONFIG" >>"$CONF"
  fi
}

start() {
  write_config
  refuse_other_layout
  drop_resync_snapshot
  hand_over_if_back_empty
  valkey-server "$CONF" &
  server=$!
  trap 'kill -TERM "$server" 2>/dev/null' TERM INT
  keeper "$server" &
  keeper_pid=$!
  status=0
  while kill -0 "$server" 2>/dev/null; do
    wait "$server" && status=0 || status=$?
  done
  kill "$keeper_pid" 2>/dev/null || true
  exit "$status"
}

# Whether extraConfig turns RDB or AOF persistence on (the chart's own config has it off).
persistent() {
  [ -n "${EXTRA_CONFIG:-}" ] && [ -s "$EXTRA_CONFIG" ] &&
    grep -Eqi '^[[:space:]]*(appendonly[[:space:]]+yes|save[[:space:]]+[^"[:space:]])' "$EXTRA_CONFIG"
}

# Without persistence a snapshot here is not this node's data: a replica's full resync writes
# its master's snapshot to disk, and the server would load that stale copy at start; back as a
# master, it would hand it to its replicas (seen on the local Kubernetes: a master restarted
# in place loaded a 128 s old dump.rdb of 0 keys and wiped its shard). Gone, the node is back
# without data, which hand_over_if_back_empty deals with.
drop_resync_snapshot() {
  persistent && return 0
  if [ -e "$DATA_DIR/dump.rdb" ]; then
    log "persistence is off: removing dump.rdb (a replica resync's copy, not this node's data)"
    rm -f "$DATA_DIR/dump.rdb"
  fi
}

# Back without data (nothing to load) as a master with slots in nodes.conf: the old self's
# replicas still hold those slots' data; have one take them over before this server starts,
# since a master that returns empty within the node timeout is copied by its replicas. Who its
# replicas are now is asked of a live peer (nodes.conf may predate a replica, or lack its
# hostname). Bounded: with no peer or no live replica the data is gone anyway.
hand_over_if_back_empty() {
  conf=$DATA_DIR/nodes.conf
  [ -s "$conf" ] || return 0
  for data in dump.rdb appendonlydir appendonly.aof; do
    [ -e "$DATA_DIR/$data" ] && return 0
  done
  saved=$(cat "$conf")
  me=$(nodes_query "$saved" '$3 ~ /myself/ && master() && slots() > 0 { print $1 }')
  [ -n "$me" ] || return 0
  peers=$(nodes_query "$saved" '$3 !~ /myself/ && NF >= 8 { h = host($2); print (h != "" ? h : ip($2)) }')
  log "back without data as master $me of slots: a replica takes them over first"
  deadline=$(($(date +%s) + 2 * NODE_TIMEOUT / 1000 + 10))
  asked=0
  while [ "$(date +%s)" -lt "$deadline" ]; do
    view=""
    for peer in $peers; do
      case "$peer" in
        *[!0-9.]*) ip=$(resolve "$peer") ;;
        *) ip=$peer ;;
      esac
      [ -n "$ip" ] && view=$(cli "$ip" CLUSTER NODES)
      [ -n "$view" ] && break
    done
    if [ -z "$view" ]; then
      log "no peer answers: my slots restart empty"
      return 0
    fi
    if ! nodes_query "$view" "\$1 == \"$me\" && slots() > 0 { found = 1 } END { exit !found }"; then
      log "a replica took my slots over; starting as its replica"
      return 0
    fi
    replica=$(nodes_query "$view" "\$4 == \"$me\" && !failed() { print ip(\$2); exit }")
    if [ -z "$replica" ]; then
      log "no live replica of mine: my slots restart empty"
      return 0
    fi
    # A manual failover gives up after 5 s: ask again after 6.
    if [ $(($(date +%s) - asked)) -ge 6 ]; then
      log "asking my replica at $replica to take my slots over (CLUSTER FAILOVER FORCE)"
      cli "$replica" CLUSTER FAILOVER FORCE >/dev/null || true
      asked=$(date +%s)
    fi
    sleep 0.5
  done
  log "no replica took my slots over in time: they restart empty"
}

# ---- the shard layout ------------------------------------------------------------------------
masters_with_slots() {  # masters_with_slots NODES: how many masters own slots (failed ones too)
  nodes_query "$1" 'master() && slots() > 0 { n++ } END { print n + 0 }'
}

# The layout of the formed cluster (every slot assigned) that the node at IP is in: its record,
# or, the record lost with its shard's data, "<masters>x?" from the slot owners; nothing when
# the node answers nothing or no cluster is formed yet.
cluster_layout() {
  [ "$(info_field "$(cli "$1" CLUSTER INFO)" cluster_slots_assigned)" = "$SLOTS" ] || return 0
  recorded=$(cli "$1" -c GET "$LAYOUT_KEY")
  case "$recorded" in
    *[!0-9x]* | "" | x* | *x) ;;  # no record, or an error (its shard down): from the slots
    *) echo "$recorded"; return 0 ;;
  esac
  nodes=$(cli "$1" CLUSTER NODES)
  [ -n "$nodes" ] && echo "$(masters_with_slots "$nodes")x?"
  return 0
}

# Ask the first configured peer that answers from a formed cluster; refuse another layout.
refuse_other_layout() {
  each_pod same_layout_or_refuse || true
}

# same_layout_or_refuse HOST IP (each_pod): fails when the node at IP answers from no formed
# cluster (ask the next); succeeds when its cluster has this layout; refuses to start if not.
same_layout_or_refuse() {
  have=""
  [ -n "$2" ] && have=$(cluster_layout "$2")
  case "$have" in
    "") return 1 ;;
    "$LAYOUT" | "${MASTERS}x?") return 0 ;;
    *)
      log "refusing to start: the running cluster has the shard layout ${have%x*} masters x ${have#*x} replicas each (asked $1), these settings say $MASTERS x $REPLICAS_PER_MASTER; the chart cannot reshard: set redis.cluster.masters=${have%x*} and redis.cluster.replicasPerMaster=${have#*x} back, or install a new release beside this one and move to it"
      exit 1 ;;
  esac
}

# Once the cluster serves every slot with the configured masters, record its layout (kept if
# there: the first layout stays the cluster's) for refuse_other_layout of pods to come.
record_layout() {
  [ -e "$RUN_DIR/layout-recorded" ] && return 0
  info=$(cli "$LOCAL" CLUSTER INFO)
  [ "$(info_field "$info" cluster_state)" = ok ] || return 0
  [ "$(info_field "$info" cluster_slots_assigned)" = "$SLOTS" ] || return 0
  [ "$(masters_with_slots "$(cli "$LOCAL" CLUSTER NODES)")" = "$MASTERS" ] || return 0
  cli "$LOCAL" -c SET "$LAYOUT_KEY" "$LAYOUT" NX >/dev/null
  [ -n "$(cli "$LOCAL" -c GET "$LAYOUT_KEY")" ] && : >"$RUN_DIR/layout-recorded"
  return 0
}

keeper() {
  until [ "$(cli "$LOCAL" PING)" = PONG ]; do
    kill -0 "$1" 2>/dev/null || exit 0
    sleep 0.5
  done
  log "server up as $(my_host) ($POD_IP), shard $SHARD; keeping it a cluster member"
  while kill -0 "$1" 2>/dev/null; do
    step || log "keeper step failed; retrying"
    record_layout
    sleep "$INTERVAL"
  done
}

step() {
  nodes=$(cli "$LOCAL" CLUSTER NODES)
  [ -n "$nodes" ] || return 0
  me=$(nodes_query "$nodes" '$3 ~ /myself/ { print $1 }')
  known=$(printf '%s\n' "$nodes" | grep -c .)
  if [ "$known" -le 1 ]; then
    bootstrap "$nodes"
    return
  fi
  # A live peer's view too: a node learns another's hostname only from that node's own pings,
  # so the old self of a pod that came back is known by its hostname to the nodes that saw it
  # alive, not to its replacement.
  peer_ip=$(nodes_query "$nodes" '$3 !~ /myself|fail|handshake|noaddr/ { print ip($2); exit }')
  peer=""
  [ -n "$peer_ip" ] && peer=$(cli "$peer_ip" CLUSTER NODES)
  # In a cluster. A master without slots has no role yet.
  if nodes_query "$nodes" '$3 ~ /myself/ && master() && slots() == 0 { found = 1 } END { exit !found }'; then
    take_role "$nodes" "$me" "$peer"
  fi
  repair "$nodes" "$me" "$peer"
}

# Alone: find the cluster and MEET it, or create it (pod 0 of shard 0).
bootstrap() {
  if [ "$MASTERS" -eq 1 ] && [ "$REPLICAS_PER_MASTER" -eq 0 ]; then
    if nodes_query "$1" 'slots() == 0 { found = 1 } END { exit !found }'; then
      log "one-node cluster: taking every slot"
      cli "$LOCAL" CLUSTER ADDSLOTSRANGE 0 $((SLOTS - 1)) >/dev/null
    fi
    return
  fi
  # Any pod that serves slots is in the cluster (or is a shard's pod 0 that create_cluster gave
  # its range before it stopped midway: meeting it finishes the job).
  each_pod join_if_serving && return 0
  [ "$POD_NAME" = "${SHARD_PREFIX}0-0" ] && create_cluster
  return 0
}

# join_if_serving HOST IP (each_pod): MEET the node at IP if it serves slots; fails if not.
join_if_serving() {
  [ -n "$2" ] && [ "$(info_field "$(cli "$2" CLUSTER INFO)" cluster_slots_assigned)" -gt 0 ] 2>/dev/null ||
    return 1
  log "joining the cluster through $1 ($2)"
  cli "$LOCAL" CLUSTER MEET "$2" "$PORT" >/dev/null
  return 0  # asked: no further pod
}

# Pod 0 of shard 0: every shard's pod 0 answers and none is in a cluster yet; each takes its
# shard's slot range. Replicas are not waited for. Safe to repeat after a crash midway.
create_cluster() {
  ips=""
  shard=0
  while [ "$shard" -lt "$MASTERS" ]; do
    ip=$(resolve "$(host_of "$shard" 0)")
    [ -n "$ip" ] || return 0
    peer=$(cli "$ip" CLUSTER INFO)
    [ "$(info_field "$peer" cluster_known_nodes)" = 1 ] || return 0
    ips="$ips $ip"
    shard=$((shard + 1))
  done
  log "creating the cluster: $MASTERS shard(s), masters$ips; replicas join as they come"
  shard=0
  for ip in $ips; do
    first=$((shard * SLOTS / MASTERS))
    last=$(((shard + 1) * SLOTS / MASTERS - 1))
    cli "$ip" CLUSTER SET-CONFIG-EPOCH $((shard + 1)) >/dev/null || true
    # Always asked (a range it has already is refused, harmlessly): a pod 0 may have joined
    # through a shard given its range a moment ago and learned that range by gossip, so its
    # count of assigned slots is no sign of its own (seen: shard 2 left without slots).
    cli "$ip" CLUSTER ADDSLOTSRANGE "$first" "$last" >/dev/null
    shard=$((shard + 1))
  done
  for ip in $ips; do
    [ "$ip" = "$POD_IP" ] || cli "$LOCAL" CLUSTER MEET "$ip" "$PORT" >/dev/null
  done
}

# A member without slots: replace an old self that was a master nobody took over, else become
# a replica of its own shard's master.
take_role() {
  nodes=$1
  me=$2
  view=${3:-$1}  # the peer's view knows my old self's hostname
  self=$(my_host)
  old=$(nodes_query "$view" "host(\$2) == \"$self\" && \$1 != \"$me\" && master() && slots() > 0 { print \$1; exit }")
  if [ -n "$old" ]; then
    if ! nodes_query "$view" "\$1 == \"$old\" && failed() { found = 1 } END { exit !found }"; then
      return 0  # not failed yet: wait for the cluster to agree it is gone
    fi
    if nodes_query "$view" "\$4 == \"$old\" && !failed() { found = 1 } END { exit !found }"; then
      return 0  # a replica of it is alive: its failover is coming
    fi
    ranges=$(nodes_query "$view" "\$1 == \"$old\" { for (i = 9; i <= NF; i++) if (\$i !~ /^\\[/) {
               n = split(\$i, r, \"-\"); printf \"%s %s \", r[1], (n > 1 ? r[2] : r[1]) } }")
    log "my old self $old owned slots [$ranges] and no replica took over: taking them (empty)"
    cli "$LOCAL" CLUSTER FORGET "$old" >/dev/null || true
    # shellcheck disable=SC2086  # one argument per range bound
    cli "$LOCAL" CLUSTER ADDSLOTSRANGE $ranges >/dev/null
    cli "$LOCAL" CLUSTER BUMPEPOCH >/dev/null
    return 0
  fi
  [ "$REPLICAS_PER_MASTER" -gt 0 ] || return 0
  info=$(cli "$LOCAL" CLUSTER INFO)
  [ "$(info_field "$info" cluster_slots_assigned)" = "$SLOTS" ] || return 0
  # The live master with slots among my shard's pods (a failover may have moved it off pod 0).
  target=$(nodes_query "$nodes" "
    master() && !failed() && slots() > 0 && index(host(\$2), \"$SHARD_PREFIX$SHARD-\") == 1 {
      print \$1; exit }")
  [ -n "$target" ] || return 0
  log "becoming a replica of $target, the master of shard $SHARD"
  cli "$LOCAL" CLUSTER REPLICATE "$target" >/dev/null
}

repair() {
  nodes=$1
  me=$2
  # Peers that moved: a failing node whose hostname now resolves elsewhere, where no live node is.
  nodes_query "$nodes" '$3 !~ /myself|handshake/ && $3 ~ /fail|noaddr/ && host($2) != "" {
                          print $1, ip($2), host($2) }' |
  while read -r id addr host; do
    now=$(resolve "$host")
    [ -n "$now" ] && [ "$now" != "$addr" ] || continue
    if nodes_query "$nodes" "ip(\$2) == \"$now\" && !failed() { found = 1 } END { exit !found }"; then
      continue  # a live node has that address already (the pod's replacement)
    fi
    log "peer $host ($id) moved from $addr to $now: meeting it there"
    cli "$LOCAL" CLUSTER MEET "$now" "$PORT" >/dev/null || true
  done
  # Forget old selves of replaced pods: failed, no slots, and their hostname (from my view or
  # the peer's) now on another, live node; or no hostname known at all (a ghost that gossip
  # brought back after some nodes forgot it). Every live node is told within the same step:
  # a node that still knows it would gossip it back once the others' 60 s ban ends.
  printf '%s\n==peer==\n%s\n' "$nodes" "${3:-}" | awk "$NODES_AWK"'
    $0 == "==peer==" { peer = 1; next }
    NF < 8 { next }
    { h = host($2); if (h != "") hostof[$1] = h }
    !peer && failed() && slots() == 0 { stale[$1] = 1 }
    !failed() && $3 !~ /handshake|noaddr/ { live[$1] = 1 }
    END {
      for (id in live) if (id in hostof) taken[hostof[id]] = 1
      for (id in stale) if (!(id in live) && (!(id in hostof) || (hostof[id] in taken))) print id
    }' |
  while read -r id; do
    log "forgetting $id (replaced) on every node"
    for ip in "$LOCAL" $(nodes_query "$nodes" '$3 !~ /myself|fail|handshake|noaddr/ { print ip($2) }'); do
      cli "$ip" CLUSTER FORGET "$id" >/dev/null || true
    done
  done
  takeover_if_stuck "$nodes" "$me"
}

# A replica whose master has failed and stayed failed, or stayed unreachable (fail?) without
# ever being agreed failed: with most masters gone at once (their node lost, after drains had
# gathered them there) nobody is left to agree or to elect, and the shard would stay down until
# they came back.
takeover_if_stuck() {
  mark=$RUN_DIR/master-failed-since
  master=$(nodes_query "$1" '$3 ~ /myself/ && !master() { print $4 }')
  if [ -z "$master" ] || ! nodes_query "$1" "\$1 == \"$master\" && \$3 ~ /fail/ { found = 1 } END { exit !found }"; then
    rm -f "$mark"
    return 0
  fi
  now=$(date +%s)
  [ -f "$mark" ] || echo "$now" >"$mark"
  if [ $((now - $(cat "$mark"))) -ge $((3 * NODE_TIMEOUT / 1000 + 1)) ]; then
    log "master $master failed and no election happened: CLUSTER FAILOVER TAKEOVER"
    cli "$LOCAL" CLUSTER FAILOVER TAKEOVER >/dev/null || true
    rm -f "$mark"
  fi
}

# ---- probes and preStop ----------------------------------------------------------------------
ready() {
  info=$(cli "$LOCAL" CLUSTER INFO)
  [ "$(info_field "$info" cluster_state)" = ok ] || { echo "cluster_state not ok"; exit 1; }
  repl=$(cli "$LOCAL" INFO replication)
  case "$(info_field "$repl" role)" in
    master)
      nodes=$(cli "$LOCAL" CLUSTER NODES)
      nodes_query "$nodes" '$3 ~ /myself/ && slots() > 0 { found = 1 } END { exit !found }' \
        || { echo "master without slots"; exit 1; } ;;
    slave|replica)
      [ "$(info_field "$repl" master_link_status)" = up ] || { echo "replica link down"; exit 1; } ;;
    *) echo "no role"; exit 1 ;;
  esac
}

alive() {
  case "$(cli "$LOCAL" PING)" in
    PONG|LOADING*|MASTERDOWN*) exit 0 ;;
    *) exit 1 ;;
  esac
}

prestop() {
  nodes=$(cli "$LOCAL" CLUSTER NODES)
  me=$(nodes_query "$nodes" '$3 ~ /myself/ && master() && slots() > 0 { print $1 }')
  [ -n "$me" ] || exit 0
  replica=$(nodes_query "$nodes" "\$4 == \"$me\" && !failed() && \$8 == \"connected\" { print ip(\$2); exit }")
  [ -n "$replica" ] || { log "master without a live replica: stopping without failover"; exit 0; }
  log "handing my slots to the replica at $replica (CLUSTER FAILOVER)"
  cli "$replica" CLUSTER FAILOVER >/dev/null || exit 0
  n=0
  while [ "$n" -lt 40 ]; do
    case "$(info_field "$(cli "$LOCAL" INFO replication)" role)" in
      slave|replica) log "failover done"; exit 0 ;;
    esac
    sleep 0.25
    n=$((n + 1))
  done
  log "failover did not finish in 10 s; stopping anyway"
}

case "${1:-}" in
  start) start ;;
  ready) ready ;;
  alive) alive ;;
  prestop) prestop ;;
  *) echo "usage: node.sh start|ready|alive|prestop" >&2; exit 2 ;;
esac
