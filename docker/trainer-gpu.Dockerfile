# syntax=docker/dockerfile:1.7
# GPU training worker: TensorFlow's CUDA build with the project installed from uv.lock, running an Airflow Celery
# worker on queue `gpu` (the DAG routes training there). Needs the NVIDIA Container Toolkit on the host.
#
# Build context is the repository root (compose sets it):  docker build -f docker/trainer-gpu.Dockerfile .
#
# TensorFlow is taken from the base image, not from uv.lock: the venv sees the base's site-packages and uv installs
# every locked package except `tensorflow`, so the CUDA, cuDNN and NCCL libraries the base ships are the ones
# loaded. The build fails unless that TensorFlow is a CUDA build of the locked version.

ARG TF_IMAGE=tensorflow/tensorflow:2.21.0-gpu
FROM ${TF_IMAGE}

ARG UV_VERSION=0.13.8
ARG TF_VERSION=2.21.0

RUN groupadd --gid 50000 airflow \
    && useradd --uid 50000 --gid airflow --create-home --home-dir /home/airflow --shell /bin/bash airflow

ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

WORKDIR /opt/deepfm
COPY pyproject.toml uv.lock ./
# The base's interpreter (the one its TensorFlow is installed for) must be 3.11, as uv.lock requires. uv is
# installed to a scratch folder and removed in the same layer, so it never reaches the image.
RUN python="$(command -v python3.11 || command -v python3)" \
    && "${python}" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"uv.lock needs Python 3.11, not {sys.version}"' \
    && "${python}" -m pip install --no-cache-dir --target /tmp/uv "uv==${UV_VERSION}" \
    && /tmp/uv/bin/uv venv --system-site-packages --python "${python}" /opt/venv \
    && /tmp/uv/bin/uv sync --frozen --no-dev --no-install-project --no-install-package tensorflow --no-cache \
    && rm -rf /tmp/uv \
    && /opt/venv/bin/python -c "import tensorflow as tf; \
assert tf.__version__ == '${TF_VERSION}', tf.__version__; \
assert tf.test.is_built_with_cuda(), 'base image TensorFlow is not a CUDA build'"

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/deepfm \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/deepfm/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    DEEPFM_HOME=/opt/deepfm \
    DEEPFM_MODEL_BASE_PATH=/models

# The code stays root-owned; runs write to the folders below, which compose mounts as the shared named volumes.
COPY dags/ dags/
COPY deepfm_model/ deepfm_model/
COPY feature_repo/ feature_repo/
COPY serving/ serving/

RUN mkdir -p /opt/airflow/logs /models /opt/deepfm/artifacts /opt/deepfm/data /opt/deepfm/feature_repo/data \
    && chown airflow:airflow /opt/airflow /opt/airflow/logs /models \
        /opt/deepfm/artifacts /opt/deepfm/data /opt/deepfm/feature_repo/data

USER airflow
ENTRYPOINT ["airflow"]
CMD ["celery", "worker", "--queues", "gpu", "--concurrency", "1"]
