# syntax=docker/dockerfile:1
# subsync worker image: `docker run IMAGE worker`, `... scheduler`, `... db upgrade`, etc.
#
# Two stages. The builder installs the hash-locked runtime dependencies (requirements/runtime.txt)
# into the virtualenv /opt/subsync, builds the subsync wheel with the locked build backend
# (requirements/build.txt) and installs it there without dependencies. The final stage copies only
# that virtualenv: no pip cache, no source tree, no build backend, no compilers, and not the
# `embedded` extra (production uses DATABASE_URL / REDIS_URL).
#
# Base image pinned by version (same image in both stages, so the venv's interpreter path holds).
# Pin the digest as well where a registry is reachable:
#   docker buildx imagetools inspect python:3.11.15-slim-bookworm   → PYTHON_IMAGE=python:3.11.15-slim-bookworm@sha256:…
ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements/runtime.txt requirements/build.txt requirements/
RUN python -m venv /opt/subsync \
    && /opt/subsync/bin/pip install --require-hashes --no-deps -r requirements/runtime.txt \
    && python -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes --no-deps -r requirements/build.txt
COPY pyproject.toml setup.py README.md ./
COPY worker ./worker
COPY migrations ./migrations
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /dist . \
    && /opt/subsync/bin/pip install --no-deps /dist/subsync-*.whl \
    && /opt/subsync/bin/pip check \
    && /opt/subsync/bin/pip uninstall --quiet --yes setuptools \
    && /opt/subsync/bin/python -c "import worker.cli, worker.process, worker.store.migrations as m; m.migrations_dir()"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/subsync/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SUBSYNC_LOG_FORMAT=json \
    SUBSYNC_HOME=/var/lib/subsync \
    SUBSYNC_METRICS_PORT=9191
RUN groupadd --system --gid 10001 subsync \
    && useradd --system --uid 10001 --gid subsync --home-dir /var/lib/subsync --create-home subsync
COPY --from=builder /opt/subsync /opt/subsync
WORKDIR /var/lib/subsync
USER subsync
EXPOSE 9191
# Worker liveness on its metrics port (SUBSYNC_METRICS_PORT): /livez (its threads are alive and
# heart-beating); a 503 raises, so the check exits 1. Liveness only: a database or Redis outage makes
# /readyz fail, and restarting every worker would not help (docs/operations.md §4). Containers that
# run another command (scheduler, db upgrade) get their own check or none from docker-compose.yml.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('SUBSYNC_METRICS_PORT', '9191'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/livez', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["subsync"]
CMD ["--help"]
