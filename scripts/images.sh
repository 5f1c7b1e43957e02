#!/usr/bin/env bash
# Build the channels-fleet container images with podman, from nothing but Debian's mirror and PyPI.
#
#   scripts/images.sh base      the Debian bookworm base image (debootstrap + podman import), once;
#                               and the trixie one the stand-ins are built on
#   scripts/images.sh wheels    the wheelhouse (.run/wheels/deps: dependencies, .run/wheels/app: us)
#   scripts/images.sh images    base + wheels + interface, project and chat images, and the
#                               Valkey/PostgreSQL stand-ins (incremental)
#   scripts/images.sh standins  only the stand-ins: localhost/valkey-standin, localhost/postgres-standin
#
# No image registry is reachable here, so the base is made locally; elsewhere pass
# BASE=python:3.11-slim and the same Dockerfiles build on the official image.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${BASE:-localhost/channels-fleet-base:bookworm}
# The stand-ins run the versions the chart defaults to (Valkey 8.1, PostgreSQL 17): Debian
# trixie's packages, so their base is trixie's.
STANDIN_BASE=${STANDIN_BASE:-localhost/channels-fleet-base:trixie}
TAG=${TAG:-latest}
PY=${PY:-.venv/bin/python}
WHEELS=.run/wheels
VERSION=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
# This sandbox refuses podman's default rlimits (and crun); these are accepted.
PODMAN=(podman --runtime runc)
LIMITS=(--ulimit nproc=4096:4096 --ulimit nofile=4096:4096)

log() { printf '[images] %s\n' "$*" >&2; }

# The Debian mirror apt already uses (deb822 .sources or one-line .list), never a hard-coded host.
debian_mirror() {
  local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
  local f
  for f in "${files[@]}"; do
    [ -f "$f" ] || continue
    if [[ $f == *.sources ]]; then
      awk 'BEGIN{RS=""} /(^|\n)Suites:[^\n]*[ \t]bookworm([ \t]|\n|$)/ {
             if (match($0, /(^|\n)URIs:[ \t]*[^ \t\n]+/)) {
               s = substr($0, RSTART, RLENGTH); sub(/.*URIs:[ \t]*/, "", s); print s; exit } }' "$f"
    else
      awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i ~ /:\/\//) {
             if ($(i+1) == "bookworm") { print $i; exit } } }' "$f"
    fi
  done | grep -v -- '-security' | head -n1
}

# A minimal Debian image of one release, made by debootstrap from the mirror apt already uses
# (the same host serves every release).
debootstrap_image() {  # debootstrap_image IMAGE SUITE [PACKAGES]
  local image=$1 suite=$2 packages=${3:-}
  if "${PODMAN[@]}" image exists "$image"; then
    log "base $image exists; skipping debootstrap (podman rmi $image to rebuild)"
    return
  fi
  [[ $image == localhost/channels-fleet-base:* ]] || {
    log "base $image is not present and is not ours to build; pull it first"; exit 1; }
  command -v debootstrap >/dev/null || { log "debootstrap missing: run make podman"; exit 1; }
  local mirror root
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || { log "no bookworm mirror found in /etc/apt/sources.list*"; exit 1; }
  root=$(mktemp -d "${TMPDIR:-/tmp}/channels-fleet-rootfs.XXXXXX")
  log "debootstrap $suite from $mirror into $root (takes minutes)"
  local t0=$SECONDS
  debootstrap --variant=minbase ${packages:+--include="$packages"} "$suite" "$root" "$mirror" \
    >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; rm -rf "$root" "$root.log"; exit 1; }
  rm -f "$root.log"
  # Slim: nothing in an image reads docs, man pages, locales or apt's caches.
  rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
  find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
  tar --numeric-owner -C "$root" -c . | "${PODMAN[@]}" import --quiet \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
  rm -rf "$root"
  log "base $image built in $((SECONDS - t0)) s"
}

cmd_base() {
  debootstrap_image "$BASE" bookworm python3,python3-venv,tini
}

# Wheels for one requirements list into DIR, fetched again only when the list or the base image
# changes (so the image layer that installs them stays cached). By default the base image's own
# pip fetches them (host network, wheels only), because pip evaluates environment markers against
# the interpreter it runs on and the image's Python is not the host's (redis needs async-timeout
# below 3.11.3; Debian has 3.11.2). WHEEL_ARCHES="x86_64 aarch64" (the release workflow's
# multi-arch build) fetches each architecture's manylinux wheels for CPython 3.11 instead.
fetch_wheels() {  # fetch_wheels DIR REQUIREMENTS
  local dir=$1 reqs=$2 stamp
  stamp="$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$BASE" 2>/dev/null || echo "$BASE") ${WHEEL_ARCHES:-}"
  if [ "$(cat "$dir/.stamp" 2>/dev/null)" = "$stamp" ] \
      && [ "$(cat "$dir/requirements.txt" 2>/dev/null)" = "$reqs" ]; then
    return
  fi
  log "fetching wheels into $dir"
  rm -rf "$dir" && mkdir -p "$dir"
  echo "$reqs" >"$dir/requirements.txt"
  if [ -n "${WHEEL_ARCHES:-}" ]; then
    local arch
    for arch in $WHEEL_ARCHES; do
      "$PY" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
        --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
        --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
        --platform "manylinux_2_28_$arch" --platform any \
        --dest "$dir" -r "$dir/requirements.txt"
    done
  else
    # The host's CA bundle goes in too: an intercepting proxy's CA may be in it.
    local ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt} tls=()
    [ -f "$ca" ] && tls=(-v "$ca:/etc/host-ca.crt:ro" --env PIP_CERT=/etc/host-ca.crt)
    "${PODMAN[@]}" run --rm "${LIMITS[@]}" --network host "${tls[@]}" \
      -v "$PWD/$dir:/wheels" "$BASE" sh -ec '
      python3 -m venv /tmp/venv
      /tmp/venv/bin/pip download --quiet --disable-pip-version-check --only-binary=:all: \
        --dest /wheels -r /wheels/requirements.txt'
  fi
  echo "$stamp" >"$dir/.stamp"
}

cmd_wheels() {
  local app=$WHEELS/app reqs hash
  reqs=$("$PY" -c 'import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
  fetch_wheels "$WHEELS/deps" "$reqs"
  # The demo chat's own requirements (the PostgreSQL driver), installed by docker/chat.Dockerfile.
  fetch_wheels "$WHEELS/chat" "$(grep -v '^#' examples/chat/requirements.txt)"
  # Our wheel is rebuilt only when its sources change: an identical file keeps the image's
  # COPY layer, and everything after it, cached.
  hash=$(find pyproject.toml README.md src -type f \
           ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 \
         | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$app/.hash" 2>/dev/null)" != "$hash" ]; then
    log "building the channels-fleet wheel into $app"
    rm -rf "$app" && mkdir -p "$app"
    "$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$app" . \
      >.run/images-wheel.log 2>&1 || { cat .run/images-wheel.log >&2; exit 1; }
    echo "$hash" >"$app/.hash"
  fi
}

# A digest of everything an image is built from: its Dockerfile, .dockerignore, the base image's
# id and the files it copies. Stored as a label, so an unchanged image is not even rebuilt
# (podman's layer cache would still take seconds to hash the context).
inputs_digest() {  # inputs_digest FILE FROM_IMAGE PATH...
  local file=$1 from=$2
  shift 2
  {
    cat "docker/$file" .dockerignore
    "${PODMAN[@]}" image inspect --format '{{.Id}}' "$from"
    find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -name '*.sqlite3' -print0 \
      | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -d' ' -f1
}

build() {  # build FILE IMAGE FROM_IMAGE "PATHS" [extra podman build args]
  local file=$1 image=$2 from=$3 paths=$4 t0=$SECONDS digest
  shift 4
  # shellcheck disable=SC2086  # $paths is a list
  digest=$(inputs_digest "$file" "$from" $paths)
  if [ "$("${PODMAN[@]}" image inspect --format '{{index .Labels "channels-fleet.inputs"}}' \
          "$image" 2>/dev/null)" = "$digest" ]; then
    log "$image is up to date"
  else
    "${PODMAN[@]}" build --quiet --layers "${LIMITS[@]}" --build-arg "BASE=$from" \
      --build-arg "VERSION=$VERSION" --label "channels-fleet.inputs=$digest" \
      -f "docker/$file" -t "$image" "$@" . >/dev/null
    log "$image built in $((SECONDS - t0)) s"
  fi
  # Ours are also tagged with the package version: the chart's default tag is its appVersion.
  [[ $image == *-standin:* ]] || "${PODMAN[@]}" tag "$image" "${image%:*}:$VERSION"
}

cmd_images() {
  cmd_base
  cmd_wheels
  build interface.Dockerfile "localhost/channels-fleet-interface:$TAG" "$BASE" "$WHEELS"
  build project.Dockerfile "localhost/channels-fleet-project:$TAG" "$BASE" "$WHEELS"
  if [ -f examples/chat/manage.py ]; then
    build chat.Dockerfile "localhost/channels-fleet-chat:$TAG" \
      "localhost/channels-fleet-project:$TAG" "examples/chat $WHEELS/chat" \
      --build-arg "PROJECT_BASE=localhost/channels-fleet-project:$TAG"
  else
    log "examples/chat/manage.py missing: chat image not built"
  fi
  "${PODMAN[@]}" images --filter reference='localhost/channels-fleet-*' \
    --format '{{.Repository}}:{{.Tag}}\t{{.Size}}'
}

# Stand-ins for the official Valkey and PostgreSQL images the chart runs, built from Debian
# trixie's packages of the same versions: no registry is reachable here. Point the chart at them
# with redis.image.* / database.postgresql.image.* (docs/deployment.md). Not for production.
cmd_standins() {
  debootstrap_image "$STANDIN_BASE" trixie
  build valkey-standin.Dockerfile localhost/valkey-standin:latest "$STANDIN_BASE" docker/standin \
    --network host
  build postgres-standin.Dockerfile localhost/postgres-standin:latest "$STANDIN_BASE" \
    docker/standin --network host
  "${PODMAN[@]}" images --filter reference='localhost/*-standin' \
    --format '{{.Repository}}:{{.Tag}}\t{{.Size}}'
}

# One build at a time per checkout: two test runs must not rewrite the wheelhouse under each other.
mkdir -p .run
exec 9>.run/images.lock
flock 9

case "${1:-images}" in
  base) cmd_base ;;
  wheels) cmd_wheels ;;
  images) cmd_images; cmd_standins ;;
  standins) cmd_standins ;;
  mirror) debian_mirror ;;
  *) echo "usage: $0 [base|wheels|images|standins|mirror]" >&2; exit 2 ;;
esac
