# syntax=docker/dockerfile:1
#
# One image for every role of gan-balancer; docker-compose.yml picks the role per service:
#   api     balancer api --host 0.0.0.0 --port 8000   (FastAPI only)
#   worker  balancer worker                           (Celery, GPU queue)
#   migrate balancer db upgrade                       (one-shot Alembic upgrade)
# The default CMD, `balancer serve`, is the all-in-one embedded setup (API + one worker,
# SQLite + embedded broker under /data), so `docker run -p 8000:8000 IMAGE` works alone.
#
# GPU: torch comes from PyPI's default Linux x86_64 wheels, which bundle the CUDA runtime
# libraries (nvidia-* wheels). The host needs only the NVIDIA driver (new enough for the CUDA
# version of the torch wheel that pip resolves, e.g. CUDA 13 wheels need driver R580+) and the
# NVIDIA Container Toolkit; no CUDA base image is needed. Without a GPU it runs on CPU.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build stage: a virtualenv with the project and its dependencies ----------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, read from pyproject.toml, so that this (multi-GB, torch) layer is
# rebuilt only when pyproject.toml changes, not on every source edit.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
    && pip install --no-cache-dir -r /tmp/requirements.txt

# Then the project itself (dependencies are already there).
COPY . .
RUN pip install --no-cache-dir --no-deps . \
    && balancer --help > /dev/null

# ---- runtime stage -------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="gan-balancer" \
      org.opencontainers.image.description="Balance under-represented image classes with per-class GANs: API and GPU worker"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BALANCER_DATA_DIR=/data

# Non-root user. /data is created and owned by it here so that a fresh named volume mounted
# at /data (docker-compose.yml) is initialised with this ownership and is writable.
RUN groupadd --system --gid 10001 balancer \
    && useradd --system --uid 10001 --gid balancer --home-dir /home/balancer --create-home \
       --shell /usr/sbin/nologin balancer \
    && mkdir -p /data \
    && chown balancer:balancer /data

COPY --from=build /opt/venv /opt/venv

# Numeric, so that runtimes (e.g. Kubernetes runAsNonRoot) can verify it is not root.
USER 10001:10001
WORKDIR /home/balancer

# matplotlib builds its font list on its first import in a fresh home (0.5 s of a new
# container's warm-up or first job on a 2-core machine); build it into the image instead, in
# this user's home where it looks for it.
RUN python -c "import matplotlib.font_manager"

EXPOSE 8000

# Liveness of the API on port 8000 (GET /healthz). Only meaningful for the API roles
# (serve, api); docker-compose.yml disables it for the worker and the migrate job.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["balancer", "serve", "--host", "0.0.0.0", "--port", "8000"]
