#!/bin/sh
# Register every Kapacitor replica as a destination of one InfluxDB subscription in ANY
# mode, so InfluxDB spreads the writes of DATABASE.RETENTION_POLICY across the replicas
# (round robin per write; a destination that fails is skipped for the next one).
#
# Runs as an init container of each Kapacitor pod (Kapacitor's own subscription
# management is disabled: it would register each replica as a separate subscription, and
# every replica would receive every point). Idempotent: when the subscription already has
# exactly the wanted destinations nothing changes; otherwise it is dropped and created
# again, which leaves a gap of one round trip with no subscription.
#
# env: INFLUX_URL (default http://influxdb:8086), INFLUX_USERNAME / INFLUX_PASSWORD (an
#      admin: CREATE SUBSCRIPTION needs one; unset = no auth), DATABASE (fraud),
#      RETENTION_POLICY (autogen), SUBSCRIPTION (kapacitor), KAPACITOR_REPLICAS (1),
#      DESTINATION_PATTERN (http://kapacitor-{i}.kapacitor:9092: the StatefulSet's pod
#      {i} behind its headless Service), WAIT_SECONDS (300, for InfluxDB to answer /ping)
set -eu

INFLUX_URL="${INFLUX_URL:-http://influxdb:8086}"
DATABASE="${DATABASE:-fraud}"
RETENTION_POLICY="${RETENTION_POLICY:-autogen}"
SUBSCRIPTION="${SUBSCRIPTION:-kapacitor}"
KAPACITOR_REPLICAS="${KAPACITOR_REPLICAS:-1}"
default_pattern='http://kapacitor-{i}.kapacitor:9092'
DESTINATION_PATTERN="${DESTINATION_PATTERN:-$default_pattern}"
WAIT_SECONDS="${WAIT_SECONDS:-300}"

log() { echo "influxdb-subscription $*" >&2; }
die() { log "event=error $*"; exit 1; }

case "$DESTINATION_PATTERN" in
    *'{i}'*) ;;
    *) die "DESTINATION_PATTERN=$DESTINATION_PATTERN has no {i} (the pod ordinal)" ;;
esac
case "$KAPACITOR_REPLICAS" in
    '' | *[!0-9]*) die "KAPACITOR_REPLICAS=$KAPACITOR_REPLICAS is not a number" ;;
esac
[ "$KAPACITOR_REPLICAS" -ge 1 ] || die "KAPACITOR_REPLICAS must be at least 1"

if [ -n "${INFLUX_USERNAME:-}" ]; then
    set -- -u "${INFLUX_USERNAME}:${INFLUX_PASSWORD:-}"
else
    set --
fi

# query STATEMENT: prints InfluxDB's JSON answer; fails on an HTTP error or a statement
# error (InfluxDB answers those with 200 and an "error" key)
query() {
    out=$(curl -sS --fail --max-time 10 "$@" -X POST "$INFLUX_URL/query" \
        --data-urlencode "q=$QUERY") || return 1
    case "$out" in
        *'"error"'*) log "event=statement_error query=\"$QUERY\" answer=$out"; return 2 ;;
    esac
    printf '%s\n' "$out"
}

waited=0
until curl -sS --fail --max-time 5 -o /dev/null "$INFLUX_URL/ping" 2>/dev/null; do
    [ "$waited" -lt "$WAIT_SECONDS" ] || die "InfluxDB at $INFLUX_URL did not answer /ping in ${WAIT_SECONDS}s"
    [ $((waited % 10)) -eq 0 ] && log "event=waiting url=$INFLUX_URL"
    sleep 1
    waited=$((waited + 1))
done

# the wanted destinations, in InfluxQL ('a', 'b') and as SHOW SUBSCRIPTIONS lists them
dests_ql=""
dests_json=""
i=0
while [ "$i" -lt "$KAPACITOR_REPLICAS" ]; do
    url=$(printf '%s' "$DESTINATION_PATTERN" | sed "s/{i}/$i/g")
    dests_ql="${dests_ql:+$dests_ql, }'$url'"
    dests_json="${dests_json:+$dests_json,}\"$url\""
    i=$((i + 1))
done
wanted="[\"$RETENTION_POLICY\",\"$SUBSCRIPTION\",\"ANY\",[$dests_json]]"

QUERY="CREATE DATABASE \"$DATABASE\""
query "$@" >/dev/null || die "cannot create database $DATABASE"

QUERY="SHOW SUBSCRIPTIONS"
existing=$(query "$@") || die "cannot list subscriptions"
# one series per database: keep only ours, then look for the exact row
ours=$(printf '%s' "$existing" | tr -d '\n' | sed 's/{"name":/\n{"name":/g' | grep -F "{\"name\":\"$DATABASE\"," || true)
case "$ours" in
    *"$wanted"*)
        log "event=unchanged subscription=$SUBSCRIPTION on=$DATABASE.$RETENTION_POLICY destinations=$KAPACITOR_REPLICAS"
        exit 0
        ;;
esac

case "$ours" in
    *"[\"$RETENTION_POLICY\",\"$SUBSCRIPTION\","*)
        QUERY="DROP SUBSCRIPTION \"$SUBSCRIPTION\" ON \"$DATABASE\".\"$RETENTION_POLICY\""
        query "$@" >/dev/null || die "cannot drop the outdated subscription"
        log "event=dropped subscription=$SUBSCRIPTION reason=destinations_changed"
        ;;
esac

QUERY="CREATE SUBSCRIPTION \"$SUBSCRIPTION\" ON \"$DATABASE\".\"$RETENTION_POLICY\" DESTINATIONS ANY $dests_ql"
query "$@" >/dev/null || die "cannot create the subscription"
log "event=created subscription=$SUBSCRIPTION on=$DATABASE.$RETENTION_POLICY mode=ANY destinations=$dests_ql"
