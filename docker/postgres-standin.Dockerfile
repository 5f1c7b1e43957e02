# A local stand-in for docker.io/library/postgres, for machines that reach no image registry (this
# project's CI): Debian trixie's PostgreSQL 17 (the chart's default version) with an entrypoint that honours the official image's
# contract (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, PGDATA; initdb on an empty PGDATA; runs
# as uid 999 `postgres`), so `database.postgresql.image.*` pointing here runs the chart unchanged.
# Not for production.
#   scripts/images.sh images  ->  localhost/postgres-standin:latest
ARG BASE=localhost/channels-fleet-base:trixie
FROM ${BASE}
# The postgres user first, with the official image's ids; no cluster made by the package.
RUN groupadd --system --gid 999 postgres \
 && useradd --system --uid 999 --gid postgres --home-dir /var/lib/postgresql \
      --shell /bin/bash postgres \
 && mkdir -p /etc/postgresql-common/createcluster.d \
 && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/no-main.conf \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-17 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* \
 && ln -s /usr/lib/postgresql/*/bin/* /usr/local/bin/ \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
 && chmod 3777 /var/run/postgresql
COPY docker/standin/postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ARG VERSION=dev
LABEL org.opencontainers.image.title="postgres-standin" \
      org.opencontainers.image.description="Debian's PostgreSQL with the official postgres image's entrypoint contract: a local stand-in" \
      org.opencontainers.image.version="${VERSION}"
ENV PGDATA=/var/lib/postgresql/data
USER 999:999
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
