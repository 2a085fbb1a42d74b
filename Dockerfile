# syntax=docker/dockerfile:1
# QLP deploy bot: `docker build -t qlp-chatops .` then
#   docker run -p 3000:3000 -e SLACK_BOT_TOKEN=... -e SLACK_SIGNING_SECRET=... \
#     -e QLP_DATABASE_URL=postgresql+psycopg://... -e QLP_CONFIG=/etc/qlp/qlp.yml \
#     -v ./qlp.yml:/etc/qlp/qlp.yml:ro qlp-chatops
# tests/test_dockerfile.py checks the shape of this file (there is no Docker engine in CI).

# ---- builder: the project and every dependency as wheels --------------------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY procedures ./procedures
COPY storage ./storage
# Wheels for all dependencies too, so the final stage installs offline and needs no compiler.
RUN pip wheel --wheel-dir /wheels .

# ---- runtime ------------------------------------------------------------------------------
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    QLP_HOME=/var/lib/qlp

RUN groupadd --system --gid 10001 qlp \
    && useradd --system --uid 10001 --gid qlp --home-dir /var/lib/qlp --no-create-home \
       --shell /usr/sbin/nologin qlp \
    && install -d -o qlp -g qlp -m 0750 /var/lib/qlp

# Bind-mount the wheels instead of COPYing them, so they never land in an image layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels qlp-chatops

WORKDIR /app
COPY qlp.example.yml /app/qlp.example.yml

# Numeric uid:gid of `qlp`, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001

# POST /slack/events, GET /healthz (liveness), GET /readyz (readiness), GET /metrics
EXPOSE 3000

# Liveness: the database accepts a write and the worker runs; Slack's state never fails it.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:3000/healthz', timeout=2).status == 200 else 1)"

# Exec form: the bot is PID 1 and receives SIGTERM from `docker stop` directly.
CMD ["qlp-bot", "serve", "--host", "0.0.0.0", "--port", "3000"]
