#!/bin/bash
# One-shot setup of Elasticsearch security for the stack (idempotent, safe to re-run):
#   - sets the password of the built-in kibana_system user (Kibana's connection user)
#   - creates role fraud_alerts_writer and user alert_sink (least privilege for the sink)
# env: ES_URL, ELASTIC_PASSWORD, KIBANA_SYSTEM_PASSWORD, ALERT_SINK_ES_PASSWORD
set -euo pipefail

: "${ES_URL:?}" "${ELASTIC_PASSWORD:?}" "${KIBANA_SYSTEM_PASSWORD:?}" "${ALERT_SINK_ES_PASSWORD:?}"

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

for _ in $(seq 1 60); do
    if curl -fsS -u "elastic:${ELASTIC_PASSWORD}" "${ES_URL}/_cluster/health?wait_for_status=yellow&timeout=5s" >/dev/null; then
        break
    fi
    sleep 2
done

es POST /_security/user/kibana_system/_password "{\"password\":\"${KIBANA_SYSTEM_PASSWORD}\"}"

es PUT /_security/role/fraud_alerts_writer '{
  "cluster": ["monitor", "manage_index_templates"],
  "indices": [{
    "names": ["fraud-alerts", "fraud-alerts-*"],
    "privileges": ["create_index", "write", "read", "view_index_metadata", "manage"]
  }]
}'

es PUT /_security/user/alert_sink "{
  \"password\": \"${ALERT_SINK_ES_PASSWORD}\",
  \"roles\": [\"fraud_alerts_writer\"],
  \"full_name\": \"tick-anomaly alert sink\"
}"

echo "elasticsearch-setup event=done"
