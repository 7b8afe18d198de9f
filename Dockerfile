# syntax=docker/dockerfile:1
# Consent service image: `docker build -t consent .`, then
# `docker run -p 8000:8000 -v consent-data:/data -e CONSENT_ADMIN_KEYS=... consent`.
# Default: the embedded SQLite database at /data/consent.db. For PostgreSQL + NATS see compose.yaml.

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: the project's wheel and every dependency's wheel -------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# The full source tree: hatchling force-includes migrations/ into the wheel as consent/_migrations.
COPY pyproject.toml README.md requirements.lock ./
COPY consent/ consent/
COPY migrations/ migrations/
# The dependencies at the versions CI tested (requirements.lock), then the project itself.
RUN pip wheel --wheel-dir /wheels -r requirements.lock \
 && pip wheel --wheel-dir /wheels --no-deps .

# --- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
# The wheels are bind-mounted from the builder, so they never become a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels consent \
 && groupadd --system --gid 10001 consent \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
            --shell /usr/sbin/nologin consent \
 && mkdir /data \
 && chown 10001:10001 /data

ENV CONSENT_DATABASE_URL=sqlite+aiosqlite:////data/consent.db
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2)"]

CMD ["consent", "serve", "--host", "0.0.0.0", "--port", "8000"]
