#!/bin/bash
# One-shot setup of the InfluxDB users of the stack, each with only the rights it needs
# (idempotent: a re-run sets the passwords again and resets each user's privileges):
#   $INFLUXDB_WRITE_USER       WRITE on fraud                 the publisher
#   $INFLUXDB_READ_USER        READ on fraud                  Grafana, health checks
#   $INFLUXDB_CHRONOGRAF_USER  READ on fraud and chronograf   Chronograf's data explorer, and
#                                                             the alert history of rules made
#                                                             in Chronograf
#   $INFLUXDB_SUPERVISOR_USER  ALL (read, write) on fraud     the task supervisor: reads a gap,
#                                                             writes udf_events; the Airflow
#                                                             jobs (compose profile airflow):
#                                                             read the labelled window, write
#                                                             dropped rows and model_events
# Kapacitor keeps the admin account: creating and listing subscriptions needs admin rights.
# Databases fraud and chronograf are created if missing (the publisher may not create one).
# Other data sets' databases (a profile's [influxdb] database) are named in
# INFLUXDB_EXTRA_DATABASES="maintenance ...": created, and each user gets on them the
# rights it has on fraud.
# env: INFLUX_URL, INFLUXDB_ADMIN_USER/_PASSWORD and each user's name and _PASSWORD;
#      INFLUXDB_EXTRA_DATABASES (space-separated, default none)
set -euo pipefail

: "${INFLUX_URL:?}" "${INFLUXDB_ADMIN_USER:?}" "${INFLUXDB_ADMIN_PASSWORD:?}"
: "${INFLUXDB_WRITE_USER:?}" "${INFLUXDB_WRITE_USER_PASSWORD:?}"
: "${INFLUXDB_READ_USER:?}" "${INFLUXDB_READ_USER_PASSWORD:?}"
: "${INFLUXDB_CHRONOGRAF_USER:?}" "${INFLUXDB_CHRONOGRAF_USER_PASSWORD:?}"
: "${INFLUXDB_SUPERVISOR_USER:?}" "${INFLUXDB_SUPERVISOR_USER_PASSWORD:?}"
: "${INFLUXDB_SETUP_TIMEOUT:=120}"

DATABASE=fraud
CHRONOGRAF_DATABASE=chronograf
read -r -a EXTRA_DATABASES <<<"${INFLUXDB_EXTRA_DATABASES:-}"
extra_writes=() extra_reads=() extra_all=()
for db in ${EXTRA_DATABASES[@]+"${EXTRA_DATABASES[@]}"}; do
    extra_writes+=("WRITE:$db")
    extra_reads+=("READ:$db")
    extra_all+=("ALL:$db")
done

log() { echo "influxdb-setup $*"; }

ident() { local v=${1//\\/\\\\}; printf '"%s"' "${v//\"/\\\"}"; }   # InfluxQL identifier
literal() { local v=${1//\\/\\\\}; printf "'%s'" "${v//\'/\\\'}"; }  # InfluxQL string

# q STATEMENT: run it as the admin; prints the JSON answer. Fails on a non-2xx answer or
# an error in the result, unless the error matches $ALLOW (a regular expression).
q() {
    local out status
    out=$(mktemp)
    status=$(curl -sS -o "$out" -w '%{http_code}' -u "${INFLUXDB_ADMIN_USER}:${INFLUXDB_ADMIN_PASSWORD}" \
        -X POST "${INFLUX_URL}/query" --data-urlencode "q=$1") || status=000
    local body
    body=$(cat "$out")
    rm -f "$out"
    local error
    error=$(printf '%s' "$body" | sed -n 's/.*"error":"\([^"]*\)".*/\1/p')
    if [[ $status != 2* ]] || { [[ -n $error ]] && ! [[ $error =~ ${ALLOW:-^$} ]]; }; then
        # the statement may hold a password: log only its first two words
        log "event=error statement='$(cut -d' ' -f1-2 <<<"$1") ...' status=$status error='${error:-$body}'" >&2
        return 1
    fi
    printf '%s' "$body"
}

waited=0
until curl -fsS -o /dev/null -u "${INFLUXDB_ADMIN_USER}:${INFLUXDB_ADMIN_PASSWORD}" \
    "${INFLUX_URL}/query" --data-urlencode "q=SHOW DATABASES" 2>/dev/null; do
    if ((waited >= INFLUXDB_SETUP_TIMEOUT)); then
        log "event=influxdb_not_available url=${INFLUX_URL} waited_s=${waited}" >&2
        exit 1
    fi
    sleep 2
    waited=$((waited + 2))
done

for db in "$DATABASE" "$CHRONOGRAF_DATABASE" ${EXTRA_DATABASES[@]+"${EXTRA_DATABASES[@]}"}; do
    q "CREATE DATABASE $(ident "$db")" >/dev/null
done
log "event=databases_ready databases=${DATABASE},${CHRONOGRAF_DATABASE}${INFLUXDB_EXTRA_DATABASES:+ extra=${INFLUXDB_EXTRA_DATABASES}}"

# user NAME PASSWORD PRIVILEGE:DATABASE...: exactly these rights, nothing more
user() {
    local name=$1 password=$2
    shift 2
    local answer
    answer=$(ALLOW='^user already exists$' q "CREATE USER $(ident "$name") WITH PASSWORD $(literal "$password")") || return 1
    if [[ $answer == *'user already exists'* ]]; then
        q "SET PASSWORD FOR $(ident "$name") = $(literal "$password")" >/dev/null
        log "event=password_set user=${name}"
    else
        log "event=user_created user=${name}"
    fi
    q "REVOKE ALL PRIVILEGES FROM $(ident "$name")" >/dev/null  # admin, if ever granted
    local granted db
    granted=$(q "SHOW GRANTS FOR $(ident "$name")" | grep -o '\["[^"]*","[A-Z ]*"\]' || true)
    while IFS= read -r db; do
        [[ -n $db ]] && q "REVOKE ALL ON $(ident "$db") FROM $(ident "$name")" >/dev/null
    done < <(sed -n 's/^\["\([^"]*\)".*/\1/p' <<<"$granted")
    local grant
    for grant in "$@"; do
        q "GRANT ${grant%%:*} ON $(ident "${grant#*:}") TO $(ident "$name")" >/dev/null
    done
    log "event=privileges_set user=${name} grants=$(IFS=,; echo "$*")"
}

user "$INFLUXDB_WRITE_USER" "$INFLUXDB_WRITE_USER_PASSWORD" "WRITE:$DATABASE" \
    ${extra_writes[@]+"${extra_writes[@]}"}
user "$INFLUXDB_READ_USER" "$INFLUXDB_READ_USER_PASSWORD" "READ:$DATABASE" \
    ${extra_reads[@]+"${extra_reads[@]}"}
user "$INFLUXDB_CHRONOGRAF_USER" "$INFLUXDB_CHRONOGRAF_USER_PASSWORD" \
    "READ:$DATABASE" "READ:$CHRONOGRAF_DATABASE" ${extra_reads[@]+"${extra_reads[@]}"}
# one privilege per database and user: a GRANT replaces the one before, so read and write is ALL
user "$INFLUXDB_SUPERVISOR_USER" "$INFLUXDB_SUPERVISOR_USER_PASSWORD" "ALL:$DATABASE" \
    ${extra_all[@]+"${extra_all[@]}"}

log "event=done"
