# The API image: Hypercorn serving service.serve:app with hypercorn.toml, as a non-root user.
#   docker build -t sars-service .
#   docker build --build-arg WHEELHOUSE=wheelhouse -t sars-service .   # no network: README
# Configuration and secrets (DATABASE_URL, API_TOKENS, ...) come from the environment at run
# time, never from the image; migrations run in docker-compose.yml's one-shot `migrate` service.

# -- dependencies: a virtualenv rebuilt only when pyproject.toml changes ------------------------
FROM python:3.11-slim AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /build
COPY pyproject.toml constraints.txt ./
# WHEELHOUSE: a folder of wheels in the build context (scripts/wheelhouse.sh makes one); the
# dependencies then install from it alone (--no-index), with no network. Unset, they come from
# PyPI, and this copies pyproject.toml a second time, harmlessly.
ARG WHEELHOUSE=
COPY ${WHEELHOUSE:-pyproject.toml} ./wheelhouse/
# The runtime dependencies of [project], without the service itself (its source is copied
# below, so that editing it does not invalidate this layer).
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > requirements.txt \
    && pip install ${WHEELHOUSE:+--no-index --find-links ./wheelhouse} \
        --requirement requirements.txt --constraint constraints.txt

# -- runtime ----------------------------------------------------------------------------------
FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=8000 \
    WEB_CONCURRENCY=2
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /app \
        --shell /usr/sbin/nologin app
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
# Run from the source tree: /ready and alembic find alembic.ini and migrations/ beside service/.
COPY alembic.ini hypercorn.toml ./
COPY migrations ./migrations
COPY service ./service
USER app
EXPOSE 8000
# Liveness only (no database): /health. Readiness (/ready) is the orchestrator's business.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=2)"]
# exec: Hypercorn becomes PID 1 and gets docker's SIGTERM itself (a graceful drain, see
# hypercorn.toml); a shell in between would swallow it.
CMD ["sh", "-c", "exec hypercorn --config hypercorn.toml --bind \"0.0.0.0:${PORT}\" --workers \"${WEB_CONCURRENCY}\" service.serve:app"]
