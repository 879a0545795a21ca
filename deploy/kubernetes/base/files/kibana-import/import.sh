#!/bin/sh
# Imports the saved objects of every *.ndjson beside this script into Kibana (idempotent:
# overwrite=true): fraud-alerts.ndjson, and the files of other data sets written by
# compose/scripts/gen_dashboards.py --profile.
# Env: KIBANA_URL (default http://kibana:5601), ELASTIC_PASSWORD (user "elastic"; optional
# when security is off), KIBANA_IMPORT_TIMEOUT seconds to wait for Kibana (default 300).
set -eu

KIBANA_URL="${KIBANA_URL:-http://kibana:5601}"
TIMEOUT="${KIBANA_IMPORT_TIMEOUT:-300}"
HERE="$(cd "$(dirname "$0")" && pwd)"

if [ -n "${ELASTIC_PASSWORD:-}" ]; then
  set -- -u "elastic:${ELASTIC_PASSWORD}"
else
  set --
fi

echo "event=wait_kibana url=${KIBANA_URL}"
waited=0
until curl -fsS "$@" "${KIBANA_URL}/api/status" 2>/dev/null | grep -Eq '"level": ?"available"'; do
  if [ "$waited" -ge "$TIMEOUT" ]; then
    echo "event=kibana_not_available url=${KIBANA_URL} waited_s=${waited}" >&2
    exit 1
  fi
  sleep 5
  waited=$((waited + 5))
done

for FILE in "$HERE"/*.ndjson; do
  [ -f "$FILE" ] || continue
  echo "event=import file=${FILE}"
  response="$(curl -sS "$@" -X POST "${KIBANA_URL}/api/saved_objects/_import?overwrite=true" \
    -H "kbn-xsrf: true" --form "file=@${FILE}" -w '\n%{http_code}')"
  status="$(printf '%s\n' "$response" | tail -n 1)"
  body="$(printf '%s\n' "$response" | sed '$d')"
  echo "$body"
  if [ "$status" != "200" ] || ! printf '%s' "$body" | grep -Eq '"success": ?true'; then
    echo "event=import_failed file=${FILE} http_status=${status}" >&2
    exit 1
  fi
done
echo "event=imported"
