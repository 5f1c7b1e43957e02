# A local stand-in for docker.io/valkey/valkey, for machines that reach no image registry (this
# project's CI): Debian trixie's valkey-server 8.1 (the chart's default version), uid 999 like
# the official image. Not for production.
#   scripts/images.sh images  ->  localhost/valkey-standin:latest (on the trixie base)
ARG BASE=localhost/channels-fleet-base:trixie
FROM ${BASE}
RUN groupadd --system --gid 999 valkey \
 && useradd --system --uid 999 --gid valkey --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin valkey \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends valkey-server valkey-tools \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /etc/valkey/valkey.conf \
 && valkey-server --version
ARG VERSION=dev
LABEL org.opencontainers.image.title="valkey-standin" \
      org.opencontainers.image.description="Debian trixie's valkey-server: a local stand-in for docker.io/valkey/valkey" \
      org.opencontainers.image.version="${VERSION}"
# No /data in the image: the chart mounts the node's data directory there (an emptyDir or a
# claim), and podman's tmpfs would take an existing directory's mode (not the emptyDir's 0777).
USER 999:999
WORKDIR /tmp
EXPOSE 6379
CMD ["valkey-server"]
