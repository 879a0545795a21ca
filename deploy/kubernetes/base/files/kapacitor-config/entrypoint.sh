#!/bin/sh
# Start Kapacitor with the alert-sink token filled in from the environment.
#
# 1. Renders the configuration template ($KAPACITOR_CONF_TEMPLATE) into $KAPACITOR_CONF and
#    the TICKscript load directory ($KAPACITOR_LOAD_SRC: templates/, tasks/, handlers/) into
#    $KAPACITOR_LOAD_DIR, replacing @ALERT_SINK_TOKEN@ with the token from ALERT_SINK_TOKEN
#    or from the file named by ALERT_SINK_TOKEN_FILE. Rendered files are mode 0600.
# 2. Waits (up to $UDF_WAIT_SECONDS) for the UDF sockets: Kapacitor asks every configured
#    UDF for its options at start-up and refuses to start when a socket is missing.
# 3. Execs the command (default: kapacitord -config $KAPACITOR_CONF).
set -eu

: "${KAPACITOR_CONF_TEMPLATE:=/etc/kapacitor/kapacitor.conf}"
: "${KAPACITOR_CONF:=/var/lib/kapacitor/kapacitor.rendered.conf}"
: "${KAPACITOR_LOAD_SRC:=/etc/kapacitor/load-src}"
# Kapacitor itself reads KAPACITOR_LOAD_DIR as an override of [load] dir.
: "${KAPACITOR_LOAD_DIR:=/etc/kapacitor/load}"
# set UDF_SOCKETS="" to skip the wait
UDF_SOCKETS="${UDF_SOCKETS-/var/run/tick-anomaly/udf.sock /var/run/tick-anomaly/udf-batch.sock}"
: "${UDF_WAIT_SECONDS:=120}"
export KAPACITOR_LOAD_DIR

log() { echo "kapacitor-entrypoint: $*" >&2; }
die() { log "error: $*"; exit 64; }

token="${ALERT_SINK_TOKEN:-}"
if [ -z "$token" ] && [ -n "${ALERT_SINK_TOKEN_FILE:-}" ]; then
    [ -r "$ALERT_SINK_TOKEN_FILE" ] || die "ALERT_SINK_TOKEN_FILE=$ALERT_SINK_TOKEN_FILE is not readable"
    token=$(tr -d ' \r\n' < "$ALERT_SINK_TOKEN_FILE")
fi
[ -n "$token" ] || die "no alert-sink token: set ALERT_SINK_TOKEN (run make env) or ALERT_SINK_TOKEN_FILE"
case "$token" in
    *[!A-Za-z0-9._~+/=-]*) die "ALERT_SINK_TOKEN may only contain A-Z a-z 0-9 . _ ~ + / = -" ;;
esac

render() {  # render SRC DEST
    umask 077
    sed "s|@ALERT_SINK_TOKEN@|$token|g" "$1" > "$2.tmp"
    mv "$2.tmp" "$2"
}

[ -r "$KAPACITOR_CONF_TEMPLATE" ] || die "configuration template $KAPACITOR_CONF_TEMPLATE not found"
mkdir -p "$(dirname "$KAPACITOR_CONF")"
render "$KAPACITOR_CONF_TEMPLATE" "$KAPACITOR_CONF"
log "configuration rendered to $KAPACITOR_CONF"

if [ -d "$KAPACITOR_LOAD_SRC" ]; then
    for sub in templates tasks handlers; do
        rm -rf "${KAPACITOR_LOAD_DIR:?}/$sub"
        mkdir -p "$KAPACITOR_LOAD_DIR/$sub"
        [ -d "$KAPACITOR_LOAD_SRC/$sub" ] || continue
        for f in "$KAPACITOR_LOAD_SRC/$sub"/*; do
            [ -f "$f" ] || continue
            render "$f" "$KAPACITOR_LOAD_DIR/$sub/$(basename "$f")"
        done
    done
    log "load directory rendered from $KAPACITOR_LOAD_SRC to $KAPACITOR_LOAD_DIR"
else
    log "warning: $KAPACITOR_LOAD_SRC not found; no tasks are loaded from files"
fi

waited=0
for sock in $UDF_SOCKETS; do
    while [ ! -S "$sock" ]; do
        [ "$waited" -lt "$UDF_WAIT_SECONDS" ] || die "UDF socket $sock missing after ${UDF_WAIT_SECONDS}s (is udf-agent running?)"
        [ $((waited % 10)) -eq 0 ] && log "waiting for UDF socket $sock"
        sleep 1
        waited=$((waited + 1))
    done
done

if [ "$#" -eq 0 ]; then
    set -- kapacitord -config "$KAPACITOR_CONF"
fi
exec "$@"
