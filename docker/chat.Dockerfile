# The demo chat project on the project base: its requirements (the PostgreSQL driver, from the
# wheelhouse .run/wheels/chat) and its code. The same command runs its worker (default) or its
# web tier:
#   podman run ... localhost/channels-fleet-chat worker chat_project.asgi:application
#   podman run ... localhost/channels-fleet-chat web chat_project.wsgi:application
ARG PROJECT_BASE=localhost/channels-fleet-project:latest
FROM ${PROJECT_BASE}
USER root
COPY .run/wheels/chat/ /wheels/chat/
RUN pip install --quiet --no-index --find-links /wheels/chat -r /wheels/chat/requirements.txt \
 && rm -rf /wheels
# Owned by root and read-only to the service user; compiled now because the root filesystem is
# read-only at run time and PYTHONDONTWRITEBYTECODE is set.
COPY --chown=root:root examples/chat/ /app/
RUN python3 -m compileall -q /app
USER 10001:10001
# The demo's default SQLite file lives beside the checkout's .run/; here /tmp is the only
# writable place (the chart sets DATABASE_URL to its PostgreSQL).
ENV DJANGO_SETTINGS_MODULE=chat_project.settings \
    CHAT_RUN_DIR=/tmp
CMD ["worker", "chat_project.asgi:application"]
