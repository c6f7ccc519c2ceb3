#!/usr/bin/env bash
# One-shot set-up of docker/compose.yaml, run as root by the `airflow-init` service before anything else starts.
# Idempotent: every `docker compose up` runs it again.
#   1. give the shared named volumes to the airflow user (Docker seeds a new volume from whichever image mounts it
#      first, so its owner is not otherwise guaranteed);
#   2. as that user, the deployment's own set-up, `python -m dags.ops.deploy_init` (the deploy test,
#      `make deploy-test`, runs the same module): the UI's password file from AIRFLOW_ADMIN_PASSWORD; TF Serving's
#      model config (MODEL_CONFIG_SOURCE) installed as DEEPFM_MODEL_CONFIG_FILE only when absent, so an `up`
#      never resets the labels the pipeline moves there, and each model's base path created; the Feast registry's
#      database when the registry is SQL; `airflow db migrate`; the connections in docker/connections.json and
#      the DAGs' pools in dags/pools.json.
set -euo pipefail

: "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?set AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE}"
: "${DEEPFM_MODEL_CONFIG_FILE:?set DEEPFM_MODEL_CONFIG_FILE}"

writable=(
    "${AIRFLOW_HOME}/logs"
    "$(dirname "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE}")"
    "${DEEPFM_MODEL_BASE_PATH}"
    "$(dirname "${DEEPFM_MODEL_CONFIG_FILE}")"
    "${DEEPFM_ARTIFACTS}"
    "${DEEPFM_HOME}/data"
    "${DEEPFM_HOME}/feature_repo/data"
)
for folder in "${writable[@]}"; do
    mkdir -p "${folder}"
    chown airflow:airflow "${folder}"
done

HOME=/home/airflow exec setpriv --reuid=airflow --regid=airflow --init-groups -- python -m dags.ops.deploy_init
