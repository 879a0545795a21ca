#!/bin/bash
# One-shot setup of Elasticsearch security for the stack (idempotent, safe to re-run):
#   - sets the password of the built-in kibana_system user (Kibana's connection user)
#   - creates role fraud_alerts_writer and user alert_sink (least privilege for the sink)
#   - creates role fraud_alerts_reader and user grafana (read-only, for Grafana's datasource)
# Both roles cover the alert indices in ALERT_INDICES (space-separated, default
# fraud-alerts; add a data set's [alerts] index, e.g. "fraud-alerts machine-failure-alerts")
# and their rollover names (INDEX-*).
# env: ES_URL, ELASTIC_PASSWORD, KIBANA_SYSTEM_PASSWORD, ALERT_SINK_ES_PASSWORD,
#      GRAFANA_ES_PASSWORD; ES_SETUP_TIMEOUT (seconds to wait for the cluster, default 120);
#      ALERT_INDICES
set -euo pipefail

: "${ES_URL:?}" "${ELASTIC_PASSWORD:?}" "${KIBANA_SYSTEM_PASSWORD:?}" "${ALERT_SINK_ES_PASSWORD:?}"
: "${GRAFANA_ES_PASSWORD:?}"

# the index names of the roles, as a JSON list: "a", "a-*", "b", "b-*"
read -r -a indices <<<"${ALERT_INDICES:-fraud-alerts}"
[[ ${#indices[@]} -gt 0 ]] || indices=(fraud-alerts)
NAMES=""
for index in "${indices[@]}"; do
    if ! [[ $index =~ ^[a-z0-9][a-z0-9_.+-]*$ ]]; then
        echo "elasticsearch-setup event=error reason='not an index name: ${index}'" >&2
        exit 64
    fi
    NAMES="${NAMES:+$NAMES, }\"${index}\", \"${index}-*\""
done

es() {
    # es METHOD PATH [JSON]: fails (and prints the body) on any non-2xx answer
    local method=$1 path=$2 body=${3:-}
    local out status
    out=$(mktemp)
    status=$(curl -sS -o "$out" -w '%{http_code}' -u "elastic:${ELASTIC_PASSWORD}" \
        -X "$method" -H 'Content-Type: application/json' ${body:+--data "$body"} "${ES_URL}${path}")
    if [[ $status != 2* ]]; then
        echo "elasticsearch-setup event=error method=$method path=$path status=$status body=$(cat "$out")"
        rm -f "$out"
        return 1
    fi
    rm -f "$out"
    echo "elasticsearch-setup event=ok method=$method path=$path status=$status"
}

# wait for the cluster (up to ES_SETUP_TIMEOUT seconds); the first request reports what failed
waited=0
until curl -fsS -u "elastic:${ELASTIC_PASSWORD}" "${ES_URL}/_cluster/health?wait_for_status=yellow&timeout=5s" >/dev/null; do
    [ "$waited" -lt "${ES_SETUP_TIMEOUT:-120}" ] || break
    sleep 2
    waited=$((waited + 2))
done

es POST /_security/user/kibana_system/_password "{\"password\":\"${KIBANA_SYSTEM_PASSWORD}\"}"

es PUT /_security/role/fraud_alerts_writer '{
  "cluster": ["monitor", "manage_index_templates"],
  "indices": [{
    "names": ['"${NAMES}"'],
    "privileges": ["create_index", "write", "read", "view_index_metadata", "manage"]
  }]
}'

es PUT /_security/user/alert_sink "{
  \"password\": \"${ALERT_SINK_ES_PASSWORD}\",
  \"roles\": [\"fraud_alerts_writer\"],
  \"full_name\": \"tick-anomaly alert sink\"
}"

# What Grafana's Elasticsearch datasource needs, per its documentation: cluster `monitor`
# (the server version), `view_index_metadata` (mappings) and `read` (searches).
es PUT /_security/role/fraud_alerts_reader '{
  "cluster": ["monitor"],
  "indices": [{
    "names": ['"${NAMES}"'],
    "privileges": ["read", "view_index_metadata"]
  }]
}'

es PUT /_security/user/grafana "{
  \"password\": \"${GRAFANA_ES_PASSWORD}\",
  \"roles\": [\"fraud_alerts_reader\"],
  \"full_name\": \"tick-anomaly Grafana (read-only)\"
}"

echo "elasticsearch-setup event=done"
