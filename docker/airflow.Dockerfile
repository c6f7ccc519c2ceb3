# syntax=docker/dockerfile:1.7
# Airflow 3.3 with the project installed from uv.lock: the image of the API server, scheduler, DAG processor,
# triggerer, CPU Celery workers and Spark workers of docker/compose.yaml.
#
# Build context is the repository root (compose sets it):  docker build -f docker/airflow.Dockerfile .
# docker/airflow.Dockerfile.dockerignore keeps the context to the files copied below.

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: resolve nothing, install exactly what uv.lock pins into /opt/venv -----------------------------------
FROM ${PYTHON_IMAGE} AS builder

# Same uv as the Makefile (UV_VERSION there); tests/docker checks that the two agree.
ARG UV_VERSION=0.13.8
RUN pip install --no-cache-dir "uv==${UV_VERSION}"

# The image's own interpreter, never a downloaded one: the venv's python links to /usr/local/bin/python3.11,
# which exists in the runtime stage too.
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

WORKDIR /opt/deepfm
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project --python /usr/local/bin/python3.11

# The compiled training kernels (deepfm_model/kernels), built against the venv's TensorFlow; the runtime stage
# has no compiler and finds them through DEEPFM_KERNEL_DIR.
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*
COPY deepfm_model/__init__.py deepfm_model/__init__.py
COPY deepfm_model/kernels/ deepfm_model/kernels/
RUN DEEPFM_KERNEL_DIR=/opt/kernels /opt/venv/bin/python -m deepfm_model.kernels

# --- runtime ------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

# curl: compose healthchecks. util-linux: setpriv, with which the one-shot init drops root after fixing volumes.
# A Java runtime (Debian's default, 17 or 21, both supported by Spark 4): the Spark driver of the feature tasks,
# and the Spark workers that run this image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl util-linux default-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && command -v setpriv && command -v java

# UID/GID 50000 in both images (this one and trainer-gpu) so that every worker can write the shared volumes.
RUN groupadd --gid 50000 airflow \
    && useradd --uid 50000 --gid airflow --create-home --home-dir /home/airflow --shell /bin/bash airflow

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/deepfm \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/deepfm/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    DEEPFM_HOME=/opt/deepfm \
    DEEPFM_KERNEL_DIR=/opt/kernels \
    DEEPFM_MODEL_BASE_PATH=/models

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/kernels /opt/kernels

# The code stays root-owned (read-only to the airflow user); everything a run writes goes to the folders below,
# which compose mounts as named volumes.
WORKDIR /opt/deepfm
COPY pyproject.toml uv.lock ./
COPY dags/ dags/
COPY deepfm_model/ deepfm_model/
COPY feature_repo/ feature_repo/
COPY serving/ serving/
COPY docker/connections.json docker/connections.json
COPY --chmod=0755 docker/airflow-init.sh /usr/local/bin/deepfm-airflow-init

RUN mkdir -p /opt/airflow/logs /opt/airflow/auth /models \
        /opt/deepfm/artifacts /opt/deepfm/data /opt/deepfm/feature_repo/data \
    && chown airflow:airflow /opt/airflow /opt/airflow/logs /opt/airflow/auth /models \
        /opt/deepfm/artifacts /opt/deepfm/data /opt/deepfm/feature_repo/data

USER airflow
ENTRYPOINT ["airflow"]
CMD ["version"]
