# subsync worker image: `docker run IMAGE worker`, `... scheduler`, `... db upgrade`, etc.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SUBSYNC_LOG_FORMAT=json \
    SUBSYNC_HOME=/var/lib/subsync

RUN groupadd --system --gid 10001 subsync \
    && useradd --system --uid 10001 --gid subsync --home-dir /var/lib/subsync --create-home subsync

WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY migrations ./migrations
# Editable install: the Alembic scripts in /app/migrations sit next to the package.
RUN pip install -e . && python -c "import worker.cli"

USER subsync
ENTRYPOINT ["subsync"]
CMD ["--help"]
