#!/usr/bin/env bash
# One-shot set-up of docker/compose.yaml, run as root by the `airflow-init` service before anything else starts.
# Idempotent: every `docker compose up` runs it again.
#   1. give the shared named volumes to the airflow user (Docker seeds a new volume from whichever image mounts it
#      first, so its owner is not otherwise guaranteed);
#   2. write the simple auth manager's password file from AIRFLOW_ADMIN_PASSWORD (never baked into an image);
#   3. install TF Serving's model config (serving/models.config, bind-mounted at MODEL_CONFIG_SOURCE) into the
#      shared model volume as DEEPFM_MODEL_CONFIG_FILE, only when it is absent: from then on the pipeline owns it
#      (serving.labels moves `stable` there, TF Serving polls it every 30 s), so an `up` never resets a label; the
#      policy is latest 2, as in development, so `stable` keeps the older version loaded while a new one is
#      verified; and create each model's base path, so TF Serving waits for a first version;
#   4. create the Feast registry's database when the registry is SQL; migrate the metadata database, import the connections in /opt/deepfm/docker/connections.json and the
#      DAGs' pools in /opt/deepfm/dags/pools.json (the train task waits forever in a pool that does not exist).
set -euo pipefail

: "${AIRFLOW_ADMIN_USERNAME:?set AIRFLOW_ADMIN_USERNAME}"
: "${AIRFLOW_ADMIN_PASSWORD:?set AIRFLOW_ADMIN_PASSWORD}"
: "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?set AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE}"
: "${MODEL_CONFIG_SOURCE:?set MODEL_CONFIG_SOURCE}"
: "${DEEPFM_MODEL_CONFIG_FILE:?set DEEPFM_MODEL_CONFIG_FILE}"

as_airflow() {
    HOME=/home/airflow setpriv --reuid=airflow --regid=airflow --init-groups -- "$@"
}

writable=(
    "${AIRFLOW_HOME}/logs"
    "$(dirname "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE}")"
    "${DEEPFM_MODEL_BASE_PATH}"
    "${DEEPFM_ARTIFACTS}"
    "${DEEPFM_HOME}/data"
    "${DEEPFM_HOME}/feature_repo/data"
)
for folder in "${writable[@]}"; do
    mkdir -p "${folder}"
    chown airflow:airflow "${folder}"
done

# The API server reopens this file for writing (it adds passwords for users it does not find), hence 0600 airflow.
passwords_file="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE}"
(
    umask 077
    python -c 'import json, os; print(json.dumps({os.environ["AIRFLOW_ADMIN_USERNAME"]: os.environ["AIRFLOW_ADMIN_PASSWORD"]}))' \
        > "${passwords_file}"
)
chown airflow:airflow "${passwords_file}"

if [[ ! -e "${DEEPFM_MODEL_CONFIG_FILE}" ]]; then
    staged="$(dirname "${DEEPFM_MODEL_CONFIG_FILE}")/.models.config.staging"
    install -o airflow -g airflow -m 0644 "${MODEL_CONFIG_SOURCE}" "${staged}"
    mv -n "${staged}" "${DEEPFM_MODEL_CONFIG_FILE}"
    rm -f "${staged}"
fi
sed -n 's/^[[:space:]]*base_path:[[:space:]]*"\([^"]*\)".*/\1/p' "${DEEPFM_MODEL_CONFIG_FILE}" | while read -r base_path; do
    install -d -o airflow -g airflow "${base_path}"
done

# The Feast registry's database (DEEPFM_FEAST_REGISTRY=sql): created once, kept across `up`s.
if [[ "${DEEPFM_FEAST_REGISTRY:-file}" == sql ]]; then
    as_airflow python -c 'import os; from feature_repo.store import create_sql_database; create_sql_database(os.environ["DEEPFM_REGISTRY_URL"])'
fi

as_airflow airflow db migrate
as_airflow airflow connections import --overwrite /opt/deepfm/docker/connections.json
as_airflow airflow pools import /opt/deepfm/dags/pools.json
echo "airflow-init: volumes ready, model config installed, database migrated, connections and pools imported"
