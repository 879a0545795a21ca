#!/bin/sh
# The compose stack's Airflow: `airflow standalone` (metadata database, scheduler, DAG
# processor, API server and UI, triggerer) with the UI's admin password from the
# environment (AIRFLOW_ADMIN_PASSWORD, written by `make env`) instead of a generated one.
#   env: AIRFLOW_ADMIN_PASSWORD, AIRFLOW_HOME
set -eu
: "${AIRFLOW_ADMIN_PASSWORD:?set it (make env)}"
: "${AIRFLOW_HOME:?}"
passwords="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-$AIRFLOW_HOME/passwords.json}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$passwords"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}"
umask 077
python -c 'import json, os, sys; json.dump({"admin": os.environ["AIRFLOW_ADMIN_PASSWORD"]}, open(sys.argv[1], "w"))' "$passwords"
exec airflow standalone
