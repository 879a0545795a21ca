#!/bin/sh
# Start Kapacitor as its own user, with the alert-sink token from the environment.
#
# 1. Reads the token from ALERT_SINK_TOKEN or from the file named by ALERT_SINK_TOKEN_FILE
#    and exports it as KAPACITOR_HTTPPOST_0_BASIC_AUTH_PASSWORD, Kapacitor's own override of
#    the [[httppost]] endpoint's basic-auth password (kapacitor.conf holds no secret, and
#    Kapacitor's configuration API redacts basic auth).
# 2. Waits (up to $UDF_WAIT_SECONDS) for the UDF sockets: Kapacitor asks every configured
#    UDF for its options at start-up and refuses to start when a socket is missing.
# 3. Started as root (the image's default): gives $KAPACITOR_DATA_DIR to $KAPACITOR_USER
#    and runs the command as that user, with the sockets' group ($UDF_SOCKET_GID, default:
#    the group of the first socket) as its only supplementary group, so it can connect to
#    the agent's 0660 sockets. Started as any other user, runs the command as it is.
# The command defaults to kapacitord -config $KAPACITOR_CONF.
set -eu

: "${KAPACITOR_CONF:=/etc/kapacitor/kapacitor.conf}"
: "${KAPACITOR_USER:=kapacitor}"
: "${KAPACITOR_DATA_DIR:=/var/lib/kapacitor}"
# set UDF_SOCKETS="" to skip the wait
UDF_SOCKETS="${UDF_SOCKETS-/var/run/tick-anomaly/udf.sock /var/run/tick-anomaly/udf-batch.sock /var/run/tick-anomaly/udf-drift.sock}"
: "${UDF_WAIT_SECONDS:=120}"

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
KAPACITOR_HTTPPOST_0_BASIC_AUTH_PASSWORD="$token"
export KAPACITOR_HTTPPOST_0_BASIC_AUTH_PASSWORD
unset ALERT_SINK_TOKEN ALERT_SINK_TOKEN_FILE token

[ -r "$KAPACITOR_CONF" ] || die "configuration $KAPACITOR_CONF not found"

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

# A configuration rendered with the token by an older entrypoint (compose, or the Kubernetes
# manifests before they ran this one) is not needed anymore: do not leave the token on disk.
rm -f "$KAPACITOR_DATA_DIR/kapacitor.rendered.conf" 2>/dev/null || true

if [ "$(id -u)" -ne 0 ]; then
    exec "$@"
fi

id "$KAPACITOR_USER" >/dev/null 2>&1 || die "user $KAPACITOR_USER does not exist in this image"
first_socket=""
for sock in $UDF_SOCKETS; do first_socket="$sock"; break; done
gid="${UDF_SOCKET_GID:-}"
if [ -n "$first_socket" ]; then
    socket_gid=$(stat -c %g "$first_socket")
    if [ -z "$gid" ]; then
        gid="$socket_gid"
    elif [ "$gid" != "$socket_gid" ]; then
        log "warning: $first_socket belongs to group $socket_gid, not UDF_SOCKET_GID=$gid"
    fi
fi
case "$gid" in
    ''|*[!0-9]*) [ -z "$gid" ] || die "UDF_SOCKET_GID must be a numeric group id, got $gid" ;;
esac

# The data directory (task store, replays, alert log) belongs to Kapacitor's user, also
# when a volume was written by a root Kapacitor before.
if [ -d "$KAPACITOR_DATA_DIR" ]; then
    owner=$(stat -c %u "$KAPACITOR_DATA_DIR")
    if [ "$owner" != "$(id -u "$KAPACITOR_USER")" ]; then
        log "giving $KAPACITOR_DATA_DIR to $KAPACITOR_USER"
        chown -R "$KAPACITOR_USER:$(id -g "$KAPACITOR_USER")" "$KAPACITOR_DATA_DIR"
    fi
fi

if [ -n "$gid" ]; then
    groups="--groups=$gid"
else
    groups="--clear-groups"
fi
log "starting as $KAPACITOR_USER${gid:+ (supplementary group $gid)}"
exec setpriv --reuid="$KAPACITOR_USER" --regid="$(id -g "$KAPACITOR_USER")" "$groups" "$@"
