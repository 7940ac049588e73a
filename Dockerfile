FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Unprivileged runtime user: Celery warns against running workers as root.
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin letterpress

WORKDIR /app

# Install the package first so that editing content or templates does not reinstall it.
COPY pyproject.toml README.md ./
COPY pipeline/ ./pipeline/
COPY workers/ ./workers/
RUN pip install --no-cache-dir . \
    && rm -rf build ./*.egg-info

COPY templates/ ./templates/
COPY content/ ./content/
# Optional site configuration: a wildcard that matches nothing copies nothing (BuildKit).
COPY letterpress.tom[l] ./

# Build output: a new named volume mounted here takes this directory's owner, so the worker
# can write to it. Everything else under /app stays root-owned and read-only for the worker.
RUN mkdir -p /app/site /app/data && chown letterpress:letterpress /app/site /app/data

USER letterpress

# No HEALTHCHECK: this one image runs the migration, the worker and beat, which need different
# checks (or none), so docker-compose.yml gives each service its own.
CMD ["letterpress", "worker"]
