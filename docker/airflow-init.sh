#!/usr/bin/env bash
# One-shot set-up of docker/compose.yaml, run as root by the `airflow-init` service before anything else starts.
# Idempotent: every `docker compose up` runs it again.
#   1. give the shared named volumes to the airflow user (Docker seeds a new volume from whichever image mounts it
#      first, so its owner is not otherwise guaranteed);
#   2. write the simple auth manager's password file from AIRFLOW_ADMIN_PASSWORD (never baked into an image);
#   3. install TF Serving's model config (serving/models.config, bind-mounted at MODEL_CONFIG_SOURCE) into the
#      shared model volume as DEEPFM_MODEL_CONFIG_FILE, atomically: TF Serving polls that file every 30 s, and the
#      repository's copy wins at every `up` (a label the pipeline wrote there lasts until the next one); and
#      create each model's base path, so TF Serving waits for a first version instead of reporting a missing path;
#   4. migrate the metadata database, import the connections in /opt/deepfm/docker/connections.json and the
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

staged="$(dirname "${DEEPFM_MODEL_CONFIG_FILE}")/.models.config.staging"
install -o airflow -g airflow -m 0644 "${MODEL_CONFIG_SOURCE}" "${staged}"
mv -f "${staged}" "${DEEPFM_MODEL_CONFIG_FILE}"
sed -n 's/^[[:space:]]*base_path:[[:space:]]*"\([^"]*\)".*/\1/p' "${DEEPFM_MODEL_CONFIG_FILE}" | while read -r base_path; do
    install -d -o airflow -g airflow "${base_path}"
done

as_airflow airflow db migrate
as_airflow airflow connections import --overwrite /opt/deepfm/docker/connections.json
as_airflow airflow pools import /opt/deepfm/dags/pools.json
echo "airflow-init: volumes ready, model config installed, database migrated, connections and pools imported"
