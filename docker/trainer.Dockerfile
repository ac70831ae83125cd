# The trainer image: one container per run (app/launchers/docker.py runs `python -m trainer ...` in it).
#
#   docker compose build                                         # on the GPU box (index reachable)
#   docker/build-wheelhouse.sh && docker compose build           # air-gapped: wheels prepared beforehand
#   docker build -f docker/trainer.Dockerfile --build-arg BASE_IMAGE=... --build-arg GIT_COMMIT=... .
#
# Needs BuildKit (Compose v2 and `docker buildx` use it; Docker 20.10's own builder with DOCKER_BUILDKIT=1).
# Layers from the least to the most often changed, so a warm cache rebuilds only what a commit touched:
# OS + Python, user, dependencies (pyproject.toml + constraints.txt), conf/, trainer/, the code version.
#
# The CUDA libraries come with the torch wheel (CUDA 13); the base only needs glibc, Python 3 with venv,
# and the NVIDIA Container Toolkit's conventions. The default base is NVIDIA's minimal CUDA image
# (Ubuntu 24.04, Python 3.12). CI builds on a Debian bookworm base made with debootstrap (Python 3.11):
# see docker/build-test-image.sh.
ARG BASE_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04
FROM ${BASE_IMAGE}

ARG DEBIAN_FRONTEND=noninteractive
# Python with venv and ensurepip: installed from the distribution when the base lacks it (nvidia/cuda).
RUN if ! python3 -c "import ensurepip, venv" 2>/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi

# The unprivileged user runs are started as (unless the service picks its own uid: see the launcher).
RUN groupadd --gid 10001 labrun \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin labrun

# Dependencies: what pyproject.toml asks for (Hydra + the `trainer` extra), pinned by constraints.txt.
# From docker/wheelhouse when it holds wheels (made by docker/build-wheelhouse.sh; bind-mounted, so the
# wheels never become a layer), else from the configured package index.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
COPY pyproject.toml constraints.txt docker/requirements.py /opt/labrun/build/
RUN --mount=type=bind,source=docker/wheelhouse,target=/wheels \
    --mount=type=cache,target=/root/.cache/pip \
    set -eu; \
    python3 -m venv /opt/venv; \
    python /opt/labrun/build/requirements.py trainer /opt/labrun/build/pyproject.toml >/tmp/requirements.txt; \
    if ls /wheels/*.whl >/dev/null 2>&1; then from="--no-index --find-links /wheels"; else from=""; fi; \
    pip install --disable-pip-version-check $from \
      --constraint /opt/labrun/build/constraints.txt --requirement /tmp/requirements.txt; \
    rm /tmp/requirements.txt

# Runtime: the root file system is read-only in a run (HOME and caches live on the /tmp tmpfs), and the
# Container Toolkit exposes compute + nvidia-smi for the GPUs the run was given.
ENV PYTHONPATH=/opt/labrun \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

COPY conf/ /opt/labrun/conf/
COPY trainer/ /opt/labrun/trainer/
# The hash of the code the image holds (conf/ and trainer/), before byte-compiling: run.json names it, so
# an image built from a tree without .git still says what it runs (trainer/codestate.py).
# Byte-compiled now: at run time the root file system is read-only.
RUN python -m trainer.codestate /opt/labrun > /opt/labrun/CODE_SHA256 \
    && python -m compileall -q /opt/labrun/trainer

# Last, as it changes with every commit: the code version that run.json names.
ARG GIT_COMMIT=unknown
ENV LABRUN_CODE_VERSION=${GIT_COMMIT}
LABEL org.opencontainers.image.title="labrun-trainer" \
      org.opencontainers.image.revision=${GIT_COMMIT}

USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["python", "-m", "trainer"]
