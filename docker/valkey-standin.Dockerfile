# A local stand-in for docker.io/valkey/valkey, for machines that reach no image registry (this
# project's CI): Debian's redis-server 7.0 under Valkey's command names, uid 999 like the official
# image (on a trixie base it is redis-server 8.0). The chart's Redis Cluster script (charts/channels-fleet/files/redis/node.sh) uses only what
# both accept, so `redis.image.*` pointing here runs the same cluster. Not for production.
#   scripts/images.sh images  ->  localhost/valkey-standin:latest
ARG BASE=localhost/channels-fleet-base:bookworm
FROM ${BASE}
RUN groupadd --system --gid 999 valkey \
 && useradd --system --uid 999 --gid valkey --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin valkey \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server redis-tools \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /etc/redis/redis.conf \
 && ln -s /usr/bin/redis-server /usr/local/bin/valkey-server \
 && ln -s /usr/bin/redis-cli /usr/local/bin/valkey-cli
ARG VERSION=dev
LABEL org.opencontainers.image.title="valkey-standin" \
      org.opencontainers.image.description="Debian redis-server 7.0 as valkey-server/valkey-cli: a local stand-in for docker.io/valkey/valkey" \
      org.opencontainers.image.version="${VERSION}"
# No /data in the image: the chart mounts the node's data directory there (an emptyDir or a
# claim), and podman's tmpfs would take an existing directory's mode (not the emptyDir's 0777).
USER 999:999
WORKDIR /tmp
EXPOSE 6379
CMD ["valkey-server"]
