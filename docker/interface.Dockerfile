# The generic interface image: Daphne + the channels-fleet gateway, no project code at all.
# One image serves every Django project; it only needs CHANNELS_FLEET_REDIS_URL.
#   scripts/images.sh images    (fills the wheelhouse .run/wheels first, then builds)
#   podman build -f docker/interface.Dockerfile --build-arg BASE=python:3.11-slim .
ARG BASE=python:3.11-slim

# Dependencies, from the wheelhouse: this stage stays cached until they change.
FROM ${BASE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
COPY .run/wheels/deps/ /wheels/deps/
RUN /opt/venv/bin/pip install --quiet --no-index --find-links /wheels/deps \
      -r /wheels/deps/requirements.txt \
 && cd /opt/venv/lib/python3*/site-packages \
 && find . -name '*.po' -delete \
 && rm -rf twisted/test twisted/*/test twisted/*/*/test autobahn/test autobahn/*/test

# channels-fleet itself, kept apart so that a code change rebuilds only a small layer.
FROM deps AS app
COPY .run/wheels/app/ /wheels/app/
RUN /opt/venv/bin/pip install --quiet --no-index --no-deps --target /opt/app/site /wheels/app/*.whl \
 && mv /opt/app/site/bin /opt/app/bin

FROM deps AS venv
ARG SITE=/opt/venv/lib/python3.11/site-packages
RUN test -d ${SITE} || { echo "SITE=${SITE} is not the image Python's site-packages" >&2; exit 1; } \
 && /opt/venv/bin/pip uninstall --quiet --yes pip setuptools

FROM ${BASE}
# tini is PID 1: it forwards SIGTERM to the service (drain) and reaps children. The local
# Debian base ships it; the official python image gets it from apt.
RUN command -v tini >/dev/null || { apt-get update && apt-get install -y --no-install-recommends tini \
      && rm -rf /var/lib/apt/lists/*; } \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin fleet
ARG VERSION=dev
LABEL org.opencontainers.image.title="channels-fleet-interface" \
      org.opencontainers.image.description="Daphne + the channels-fleet gateway: holds HTTP and WebSocket connections, runs no project code" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="BSD-3-Clause"
ARG SITE=/opt/venv/lib/python3.11/site-packages
COPY --from=venv /opt/venv /opt/venv
COPY --from=app /opt/app/site/ ${SITE}/
COPY --from=app /opt/app/bin/ /opt/venv/bin/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CHANNELS_FLEET_PORT=8000 \
    CHANNELS_FLEET_METRICS_PORT=9100
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000 9100
ENTRYPOINT ["tini", "--", "channels-fleet"]
CMD ["interface"]
