# The service image (`python -m app`): slim, no torch, no CUDA. It validates overrides against conf/
# with trainer/'s light modules (Hydra only) and starts runs as containers through the Docker Engine.
#
#   docker compose build            (or: docker build -f docker/api.Dockerfile -t labrun-api .)
#
# Needs BuildKit, like docker/trainer.Dockerfile, and uses docker/wheelhouse the same way when it holds
# wheels (made by docker/build-wheelhouse.sh for this image's Python).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG DEBIAN_FRONTEND=noninteractive
RUN if ! python3 -c "import ensurepip, venv" 2>/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi
RUN groupadd --gid 10001 labrun \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin labrun

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
COPY pyproject.toml constraints.txt docker/requirements.py /opt/labrun/build/
RUN --mount=type=bind,source=docker/wheelhouse,target=/wheels \
    --mount=type=cache,target=/root/.cache/pip \
    set -eu; \
    python3 -m venv /opt/venv; \
    python /opt/labrun/build/requirements.py service /opt/labrun/build/pyproject.toml >/tmp/requirements.txt; \
    if ls /wheels/*.whl >/dev/null 2>&1; then from="--no-index --find-links /wheels"; else from=""; fi; \
    pip install --disable-pip-version-check $from \
      --constraint /opt/labrun/build/constraints.txt --requirement /tmp/requirements.txt; \
    rm /tmp/requirements.txt

ENV PYTHONPATH=/opt/labrun \
    PYTHONUNBUFFERED=1 \
    LABRUN_HOST=0.0.0.0 \
    LABRUN_PORT=8000

COPY conf/ /opt/labrun/conf/
COPY trainer/ /opt/labrun/trainer/
COPY app/ /opt/labrun/app/
COPY labrun/ /opt/labrun/labrun/

ARG GIT_COMMIT=unknown
ENV LABRUN_CODE_VERSION=${GIT_COMMIT}
LABEL org.opencontainers.image.title="labrun-api" \
      org.opencontainers.image.revision=${GIT_COMMIT}

# Non-root by default. compose.yaml runs it as root: it drives the Docker Engine through its socket,
# which is root-equivalent anyway, and it hands the run directories to the runs' unprivileged user.
USER 10001:10001
WORKDIR /opt/labrun
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["python", "-m", "app"]
