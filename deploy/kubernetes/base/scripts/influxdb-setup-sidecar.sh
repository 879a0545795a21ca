#!/bin/bash
# The compose stack's one-shot `influxdb-setup` (files/influxdb-setup/setup.sh: the
# publisher, Grafana, Chronograf and task-supervisor users, each with only its rights),
# run next to InfluxDB at every start of its pod. It then stays up, doing nothing, so that
# its readiness probe (READY_FILE exists) keeps the pod, and the `influxdb` Service, not
# ready until the users exist: no client logs in before its user is there.
#
# Not a Job: a Job's pod template cannot be changed by `kubectl apply`, and it names the
# Secret by its content hash, so a new password in stack.env could never reach InfluxDB.
# Here a changed Secret restarts the pod, and the users are set again.
#
# env: SETUP_SCRIPT (default /setup/setup.sh), READY_FILE (default
# /tmp/influxdb-setup.ready), and what setup.sh reads. When setup.sh fails this exits with
# its status and the kubelet restarts the container, with back-off. SIGTERM/SIGINT end it
# at once (exit 0), also while setup.sh runs.
set -u
: "${SETUP_SCRIPT:=/setup/setup.sh}" "${READY_FILE:=/tmp/influxdb-setup.ready}"

child=""
stop() {
    if [ -n "$child" ]; then
        kill -TERM "$child" 2>/dev/null
    fi
    exit 0
}
# PID 1 of a container gets only the signals it handles
trap stop TERM INT

rm -f "$READY_FILE"
bash "$SETUP_SCRIPT" &
child=$!
wait "$child"
status=$?
child=""
if [ "$status" -ne 0 ]; then
    echo "influxdb-setup-sidecar event=setup_failed status=$status" >&2
    exit "$status"
fi
touch "$READY_FILE"
echo "influxdb-setup-sidecar event=ready ready_file=$READY_FILE"

# a wait on a background sleep returns as soon as a signal arrives
while :; do
    sleep 3600 &
    child=$!
    wait "$child"
done
